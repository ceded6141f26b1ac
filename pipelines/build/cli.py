"""``aniportrait-data build``: the command line of the build job (options -> :class:`BuildConfig` -> :func:`run_build`).

Exit codes: 0 every clip succeeded; 3 some clips failed (the good ones are written, the
failures are rows of ``manifest.parquet`` with their reason); 2 a usage or set-up error
(bad option, unknown dataset, unreadable metadata, missing ffmpeg), or a stop that a rerun
of the same command goes on from (a full disk; downloads refused by bot checks or HTTP 429,
see ``--max-bot-checks``). Libraries (Ray, MediaPipe) are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datasets_spec import DATASETS, UnknownDatasetError
from datasets_spec import get as get_dataset
from pipelines.cli_common import EXIT_PARTIAL, Verbose, console, fail_setup, setup_logging


def build(
    dataset: Annotated[str, typer.Option(help=f"Dataset: {', '.join(sorted(DATASETS))} (see `aniportrait-data datasets`).")] = "sample",
    out: Annotated[Optional[str], typer.Option(help="Output directory or URI (s3://..., gs://...); default out/<dataset>.")] = None,
    metadata: Annotated[Optional[Path], typer.Option(help="Metadata file or folder (VFHQ meta_info, CelebV-HQ json, HDTF lists; for --dataset folder, the folder of your videos).")] = None,
    mirror: Annotated[Optional[Path], typer.Option(help="Folder of already-downloaded source videos named <youtube id>.<ext> (HDTF also <video name>.<ext>).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address: auto (a Ray started with `ray start --head`, also on this machine to save Ray's start-up in repeated builds), host:6379 or ray://host:10001; default starts a local Ray for this build.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel clip workers (default: all CPUs of the cluster).", min=1)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N clips (sorted by clip id).", min=1)] = None,
    work_dir: Annotated[Optional[str], typer.Option(help="Per-clip cache that makes the build resumable: a folder (on a cluster, one every node mounts) or an object store URI (s3://..., gs://...; stages then work in a node-local copy under TMPDIR); default <out>/_work.")] = None,
    split: Annotated[str, typer.Option(help="Split name used in shard names.")] = "train",
    size: Annotated[int, typer.Option(help="Output frame size (square).", min=16)] = 512,
    fps: Annotated[float, typer.Option(help="Output frame rate.", min=1, max=120)] = 30.0,
    shard_samples: Annotated[Optional[int], typer.Option(help="Clips per shard (default 1000; or use --shard-size).", min=1)] = None,
    shard_size: Annotated[Optional[str], typer.Option(help="Shard size: bytes with a unit (1GB, 500MB, 64KiB; a bigger single clip gets its own shard) or a clip count (1000).")] = None,
    keep_rejected: Annotated[bool, typer.Option("--keep-rejected", help="Also shard the clips a curation rule rejected, into <dataset>-<split>-rejected-*.tar.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run again the clips the release in --out records as failed (e.g. after a network error); the rest is reused.")] = False,
    download_workers: Annotated[int, typer.Option(help="Concurrent downloads.", min=1)] = 4,
    retries: Annotated[int, typer.Option(help="yt-dlp retries per download.", min=0)] = 3,
    cookies: Annotated[Optional[Path], typer.Option(help="Netscape cookies file for yt-dlp (exported from a signed-in browser; see README 'Downloading the datasets for real'); never copied into the outputs.")] = None,
    proxy: Annotated[Optional[str], typer.Option(help="Proxy URL for yt-dlp: http://[user:pass@]host:port or socks5://... (credentials never printed).")] = None,
    ytdlp_option: Annotated[Optional[list[str]], typer.Option("--yt-dlp-option", help="A YoutubeDL parameter as KEY=VALUE (VALUE read as JSON, else text), e.g. sleep_interval_requests=1; repeatable.")] = None,
    ytdlp_config: Annotated[Optional[Path], typer.Option("--yt-dlp-config", help="A yt-dlp config file (command line options such as --limit-rate 2M), read by yt-dlp's own parser; --yt-dlp-option, --cookies and --proxy win over it.")] = None,
    download_rate: Annotated[Optional[float], typer.Option(help="Downloads started per minute, for the whole build (all workers and nodes together); default no limit.", min=0.001)] = None,
    max_bot_checks: Annotated[int, typer.Option(help="Stop downloading (exit 2, a rerun goes on) after this many bot checks or HTTP 429 answers in a row.", min=1)] = 5,
    no_download: Annotated[bool, typer.Option("--no-download", help="Never download: sources come from --mirror (or earlier downloads in the work area); a missing one fails at once with not_found_in_mirror.")] = False,
    face_model: Annotated[Optional[Path], typer.Option(help="MediaPipe face_landmarker .task file (default: the one shipped).")] = None,
    landmarker_mode: Annotated[str, typer.Option(help="MediaPipe running mode: video (tracking) or image.")] = "video",
    wav2vec2: Annotated[Optional[str], typer.Option(help="wav2vec2 checkpoint for audio features: local folder or hub id (default facebook/wav2vec2-base-960h; the sample skips audio features unless given; 'none' skips them).")] = None,
    min_face_rate: Annotated[float, typer.Option(help="Reject clips with a face in fewer than this share of frames.", min=0, max=1)] = 0.9,
    filter_rules: Annotated[Optional[str], typer.Option("--filter", help="Curation rules on the quality scores, comma separated, e.g. 'face_px>=150,sync_conf>=3' (scores: see `aniportrait-data scores`); a clip breaking one is kept as a manifest row 'filtered:<rule>'.")] = None,
    curation: Annotated[Optional[Path], typer.Option(help="TOML file with curation settings (filter, scene_cuts, min_part_s, fix_sync, scene_threshold); flags override it.")] = None,
    scene_cuts: Annotated[Optional[str], typer.Option(help="Clips crossing a scene cut: split (each shot becomes a clip, default), reject or keep.")] = None,
    fix_sync: Annotated[Optional[bool], typer.Option("--fix-sync/--no-fix-sync", help="Shift each clip's audio by its measured lip/audio offset (recorded as audio_shift_frames).")] = None,
    min_frames: Annotated[Optional[int], typer.Option(help="Filter out clips of fewer frames (reason too_short; default 30, the official min_clip_length).", min=1)] = None,
    max_second_face_rate: Annotated[Optional[float], typer.Option(help="Filter out clips with a second face (at least half the main face's height) in more than this share of the sampled frames (reason multiple_faces; default 0.2; 1 keeps all).", min=0, max=1)] = None,
    min_clip_s: Annotated[float, typer.Option(help="--dataset folder: shortest automatic clip, in seconds (shorter stretches between cuts are dropped).", min=0.1)] = 2.0,
    max_clip_s: Annotated[float, typer.Option(help="--dataset folder: longest automatic clip, in seconds (longer ones are split at the quietest audio point near the limit).", min=0.5)] = 30.0,
    crop: Annotated[str, typer.Option(help="--dataset folder: face (a square face-centred box per clip, 1.5 x the face) or none (centre crop to fill).")] = "face",
    strict_metadata: Annotated[bool, typer.Option("--strict-metadata", help="Stop at the first malformed metadata entry (exit 2) instead of recording it as a failed manifest row and building the rest.")] = False,
    verbose: Verbose = False,
) -> None:
    """Build WebDataset shards, manifest.parquet and release.json for a dataset."""
    setup_logging(verbose)
    from aniportrait.media.cut import CutSettings
    from aniportrait.media.probe import missing_ffmpeg
    from aniportrait.segment import SegmentSettings
    from aniportrait.storage import OutputError
    from pipelines.build.run import SetupError, run_build
    from pipelines.build.config import BuildConfig
    from pipelines.build.curation import load_curation
    from pipelines.runtime import ray_of_this_command

    missing = missing_ffmpeg()
    if missing:
        raise fail_setup(missing)
    try:
        spec = get_dataset(dataset)
    except UnknownDatasetError as exc:
        raise fail_setup(str(exc)) from exc
    mirror = mirror or spec.default_mirror
    out = out or f"out/{dataset}"
    if work_dir is None:
        from pipelines.build.workarea import default_work_dir

        work_dir = default_work_dir(out)
    try:
        cfg = BuildConfig(
            dataset=dataset, out=out, work_dir=work_dir, metadata=str(metadata) if metadata else None,
            mirror=str(mirror) if mirror else None, address=address, workers=workers,
            download_workers=download_workers, limit=limit, split=split, cut=CutSettings(size=size, fps=fps),
            **_shard_limit(shard_samples, shard_size), keep_rejected=keep_rejected, retry_failed=retry_failed,
            download_retries=retries, **_download_options(cookies, proxy, ytdlp_config, ytdlp_option or []),
            download_rate=download_rate, max_bot_checks=max_bot_checks, no_download=no_download,
            face_model=str(face_model) if face_model else None, landmarker_mode=landmarker_mode,
            min_face_rate=min_face_rate, wav2vec2=_audio_model(spec.audio_features_by_default, wav2vec2),
            curation=load_curation(curation, filter=[filter_rules] if filter_rules else None, scene_cuts=scene_cuts,
                                   fix_sync=fix_sync, min_frames=min_frames,
                                   max_second_face_rate=max_second_face_rate),
            strict_metadata=strict_metadata,
            segment=SegmentSettings(min_clip_s=min_clip_s, max_clip_s=max_clip_s, crop=crop)
            if spec.automatic_clips else None,
        )
        with ray_of_this_command():
            result = run_build(cfg, console)
    except (SetupError, ValueError) as exc:
        raise fail_setup(str(exc)) from exc
    except OutputError as exc:  # raised in the driver or, as ray's RayTaskError(OutputError), in a worker
        reason = str(getattr(exc, "cause", exc)).splitlines()[0]
        raise fail_setup(f"{reason}\nfinished clips are kept in {work_dir}: run the same command again to resume") from exc
    if result.failed:
        console.print(f"[yellow]{result.failed} of {len(result.states)} clips failed[/] "
                      f"(reasons in {out}/manifest.parquet); exit code {EXIT_PARTIAL}")
        raise typer.Exit(EXIT_PARTIAL)
    console.print(f"[green]all {len(result.states)} clips written[/] to {out}")


def _shard_limit(shard_samples: int | None, shard_size: str | None) -> dict[str, int | None]:
    """``shard_samples``/``shard_bytes`` for the config from ``--shard-samples`` or ``--shard-size``."""
    from pipelines.build.config import parse_shard_size

    if shard_size is None:
        return {"shard_samples": shard_samples, "shard_bytes": None}
    if shard_samples is not None:
        raise ValueError("give --shard-samples or --shard-size, not both")
    samples, size = parse_shard_size(shard_size)
    return {"shard_samples": samples, "shard_bytes": size}


def _download_options(cookies: Path | None, proxy: str | None, config: Path | None,
                      options: list[str]) -> dict[str, object]:
    """``cookies``, ``proxy`` and ``ytdlp_options`` for the config: the yt-dlp config file's
    options, then each ``--yt-dlp-option``, then ``--cookies`` and ``--proxy`` (a cookies
    file or proxy set by the first two counts as if given with those flags)."""
    from aniportrait.media.download import parse_ytdlp_option, read_ytdlp_config

    merged = read_ytdlp_config(config) if config else {}
    merged.update(parse_ytdlp_option(text) for text in options)
    cookie_file, proxy_url = merged.pop("cookiefile", None), merged.pop("proxy", None)
    return {"cookies": str(cookies) if cookies else cookie_file, "proxy": proxy or proxy_url, "ytdlp_options": merged}


def _audio_model(by_default: bool, wav2vec2: str | None) -> str | None:
    """The wav2vec2 checkpoint to use (``by_default``: the dataset's ``audio_features_by_default``),
    or ``None`` to skip audio features (and say so)."""
    from aniportrait.audio import DEFAULT_WAV2VEC2

    if wav2vec2 and wav2vec2.lower() == "none":
        wav2vec2 = None
    elif wav2vec2 is None and by_default:
        wav2vec2 = DEFAULT_WAV2VEC2
    if wav2vec2 is None:
        console.print("[yellow]audio features skipped[/]: no wav2vec2 weights (give --wav2vec2 PATH_OR_HUB_ID)")
    return wav2vec2
