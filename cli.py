"""``aniportrait-data``: build, inspect and summarise AniPortrait training shards.

Exit codes of ``build``: 0 every clip succeeded; 3 some clips failed (the good ones are
written, the failures are rows of ``manifest.parquet`` with their reason); 2 a usage or
set-up error (bad option, unknown dataset, unreadable metadata, missing ffmpeg).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3

app = typer.Typer(
    help="Turn public talking-face datasets into AniPortrait training shards (WebDataset + Parquet).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def _fail_setup(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(EXIT_USAGE)


@app.command()
def build(
    dataset: Annotated[str, typer.Option(help="Dataset: sample, hdtf, celebvhq or vfhq.")] = "sample",
    out: Annotated[Optional[str], typer.Option(help="Output directory or URI (s3://..., gs://...); default out/<dataset>.")] = None,
    metadata: Annotated[Optional[Path], typer.Option(help="Metadata file or folder (VFHQ meta_info, CelebV-HQ json, HDTF lists).")] = None,
    mirror: Annotated[Optional[Path], typer.Option(help="Folder of already-downloaded source videos named <youtube id>.<ext> (HDTF also <video name>.<ext>).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (e.g. auto or ray://host:10001); default starts a local Ray.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parallel clip workers (default: all CPUs of the cluster).", min=1)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N clips (sorted by clip id).", min=1)] = None,
    work_dir: Annotated[Optional[Path], typer.Option(help="Per-clip cache that makes the build resumable; default <out>/_work.")] = None,
    split: Annotated[str, typer.Option(help="Split name used in shard names.")] = "train",
    size: Annotated[int, typer.Option(help="Output frame size (square).", min=16)] = 512,
    fps: Annotated[float, typer.Option(help="Output frame rate.", min=1, max=120)] = 30.0,
    shard_samples: Annotated[int, typer.Option(help="Clips per shard.", min=1)] = 1000,
    download_workers: Annotated[int, typer.Option(help="Concurrent downloads.", min=1)] = 4,
    retries: Annotated[int, typer.Option(help="yt-dlp retries per download.", min=0)] = 3,
    face_model: Annotated[Optional[Path], typer.Option(help="MediaPipe face_landmarker .task file (default: the one shipped).")] = None,
    landmarker_mode: Annotated[str, typer.Option(help="MediaPipe running mode: video (tracking) or image.")] = "video",
    wav2vec2: Annotated[Optional[str], typer.Option(help="wav2vec2 checkpoint for audio features: local folder or hub id (default facebook/wav2vec2-base-960h; the sample skips audio features unless given; 'none' skips them).")] = None,
    min_face_rate: Annotated[float, typer.Option(help="Reject clips with a face in fewer than this share of frames.", min=0, max=1)] = 0.9,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every clip.")] = False,
) -> None:
    """Build WebDataset shards, manifest.parquet and release.json for a dataset."""
    _setup_logging(verbose)
    from aniportrait.media.cut import CutSettings
    from pipelines.build import SetupError, run_build
    from pipelines.config import BuildConfig

    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise _fail_setup(f"{' and '.join(missing)} not found on PATH; install ffmpeg (apt-get install ffmpeg)")
    if dataset == "sample" and mirror is None:
        from datasets_spec import sample

        mirror = sample.default_mirror()
    out = out or f"out/{dataset}"
    if work_dir is None:
        if "://" in out:
            raise _fail_setup("--out is a URI: give --work-dir, a folder every Ray node can see")
        work_dir = Path(out) / "_work"
    try:
        cfg = BuildConfig(
            dataset=dataset, out=out, work_dir=str(work_dir), metadata=str(metadata) if metadata else None,
            mirror=str(mirror) if mirror else None, address=address, workers=workers,
            download_workers=download_workers, limit=limit, split=split, cut=CutSettings(size=size, fps=fps),
            shard_samples=shard_samples, download_retries=retries,
            face_model=str(face_model) if face_model else None, landmarker_mode=landmarker_mode,
            min_face_rate=min_face_rate, wav2vec2=_audio_model(dataset, wav2vec2),
        )
        result = run_build(cfg, console)
    except (SetupError, ValueError) as exc:
        raise _fail_setup(str(exc)) from exc
    if result.failed:
        console.print(f"[yellow]{result.failed} of {len(result.states)} clips failed[/] "
                      f"(reasons in {out}/manifest.parquet); exit code {EXIT_PARTIAL}")
        raise typer.Exit(EXIT_PARTIAL)
    console.print(f"[green]all {len(result.states)} clips written[/] to {out}")


def _audio_model(dataset: str, wav2vec2: str | None) -> str | None:
    """The wav2vec2 checkpoint to use, or ``None`` to skip audio features (and say so)."""
    from aniportrait.audio import DEFAULT_WAV2VEC2

    if wav2vec2 and wav2vec2.lower() == "none":
        wav2vec2 = None
    elif wav2vec2 is None and dataset != "sample":
        wav2vec2 = DEFAULT_WAV2VEC2
    if wav2vec2 is None:
        console.print("[yellow]audio features skipped[/]: no wav2vec2 weights (give --wav2vec2 PATH_OR_HUB_ID)")
    return wav2vec2


@app.command()
def inspect(
    out: Annotated[str, typer.Argument(help="A built dataset directory or URI.")],
    samples: Annotated[int, typer.Option(help="How many samples to list.", min=0)] = 3,
) -> None:
    """Show a built dataset's release file and its first samples, read back with webdataset."""
    from pipelines.report import inspect_release

    try:
        inspect_release(out, samples, console)
    except FileNotFoundError as exc:
        raise _fail_setup(f"{out} holds no built dataset ({exc})") from exc


@app.command()
def stats(out: Annotated[str, typer.Argument(help="A built dataset directory or URI.")]) -> None:
    """Summarise manifest.parquet: clips per status, failure reasons, durations."""
    from pipelines.report import manifest_stats

    try:
        manifest_stats(out, console)
    except FileNotFoundError as exc:
        raise _fail_setup(f"{out} holds no manifest.parquet ({exc})") from exc


@app.command()
def export(
    out: Annotated[str, typer.Argument(help="A built dataset directory or URI.")],
    dest: Annotated[Path, typer.Argument(help="Local folder for the official layout (clips/<id>/ frames and .npy files, training_data.json).")],
    min_frames: Annotated[int, typer.Option(help="Drop clips left with fewer frames that have a face.", min=1)] = 30,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every clip.")] = False,
) -> None:
    """Export to the official AniPortrait preprocessing layout (frame PNGs, per-frame landmarks, JSON index)."""
    _setup_logging(verbose)
    from pipelines.export import export_official

    try:
        summary = export_official(out, dest, min_frames=min_frames)
    except FileNotFoundError as exc:
        raise _fail_setup(f"{out} holds no built dataset ({exc})") from exc
    console.print(f"[green]{summary['clips_written']} clips, {summary['frames_written']} frames[/] written to "
                  f"{summary['dest']}; {summary['frames_skipped']} frames without a face skipped")
    for clip_id, reason in summary["clips_dropped"].items():
        console.print(f"[yellow]dropped[/] {clip_id}: {reason}")
    console.print(f"index for the official training config (data.json_path): {summary['index']}")


@app.command()
def preview(
    out: Annotated[str, typer.Argument(help="A built dataset directory or URI.")],
    clip_id: Annotated[str, typer.Argument(help="The clip to preview.")],
    dest: Annotated[Path, typer.Option(help="Folder for <clip>_sheet.png and <clip>_overlay.mp4.")] = Path("preview"),
    columns: Annotated[int, typer.Option(help="Tiles per row of the contact sheet.", min=1)] = 4,
    frames: Annotated[int, typer.Option(help="Evenly spaced frames on the contact sheet.", min=1)] = 8,
) -> None:
    """Write a contact sheet and an overlay video (frames + pose image + audio) of one clip."""
    from aniportrait.media.probe import MediaError
    from pipelines.preview import make_preview

    try:
        sheet, video = make_preview(out, clip_id, dest, columns=columns, frames=frames)
    except FileNotFoundError as exc:
        raise _fail_setup(f"{out} holds no built dataset ({exc})") from exc
    except (KeyError, ValueError, MediaError) as exc:
        raise _fail_setup(str(exc)) from exc
    console.print(f"wrote {sheet} and {video}")


if __name__ == "__main__":
    app()
