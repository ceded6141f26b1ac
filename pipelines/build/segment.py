"""The build's segmentation step for datasets of whole videos (``folder``): sources -> clip records.

Runs before the clip stages, in the driver: each source not scanned before is scanned
(:func:`aniportrait.segment.scan_source`) in a Ray task of one CPU; the scan is cached in
the work area (``sources/<id>.segment.json``) under a hash of the scan settings, the face
model and the file's size and modification time, so a rerun or a resumed build plans the
same clips without decoding again. The plan (:func:`aniportrait.segment.plan_segments`)
is recomputed from the scan every run: ``--min-clip-s``, ``--max-clip-s`` and ``--crop``
change without a rescan.

Each clip record's id is ``<source id>-t<start in ms, 7 digits>``; its crop is the
segment's box as a ``pixels`` :class:`~aniportrait.schema.CropSpec` of the source frame,
its provenance names the file, why the clip starts and ends where it does, and the crop
rule. The driver hands each clip its video's path (read where it is, no copy or link), so
the work area may be any store; on a cluster the folder must be at the same path on every
node. A source that cannot be read, or has no clip, becomes one failed manifest row (id:
the source id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from aniportrait.face import DEFAULT_MODEL
from aniportrait.reasons import reason_of
from aniportrait.schema import ClipRecord, ClipState, CropSpec
from aniportrait.segment import (DETECT_STEP, Segment, SegmentSettings, SourceScan, plan_segments, scan_source,
                                 undecoded_tail)
from pipelines.build.config import BuildConfig, config_hash
from pipelines.build.workarea import WorkArea
from pipelines.runtime import describe_error

STAGE = "segment"


def crop_rule(settings: SegmentSettings) -> str:
    """The crop rule as recorded in each clip's provenance."""
    if settings.crop == "none":
        return "none: centre crop of the frame to fill the square"
    return (f"face x{settings.crop_scale:g}: square of {settings.crop_scale:g} x the 90th percentile of the face "
            "box's larger side around its median centre, black beyond the frame (as the official crop_face)")


def segment_sources(cfg: BuildConfig, sources: list[ClipRecord]) -> tuple[list[ClipRecord], list[ClipState],
                                                                           dict[str, str]]:
    """Clip records of the ``sources``, the failed rows of those without clips and of video
    ends that do not decode (both sorted by id and cut together to the first ``cfg.limit``
    clips, as for every dataset: the sources are scanned in id order only until that many
    are planned), and the video file of each source with clips (source id -> absolute path,
    read where it is). Needs Ray started."""
    if cfg.segment is None or cfg.metadata is None:
        raise ValueError("segmentation needs segment settings and the videos' folder (--metadata)")
    records: list[ClipRecord] = []
    failed: list[ClipState] = []
    files: dict[str, str] = {}
    for source, payload in _scans(cfg, sorted(sources, key=lambda r: r.source_id)):
        if "error" in payload:
            failed.append(_failed(source, payload["error"], payload["reason"]))
        else:
            found = SourceScan.from_dict(payload["scan"])
            segments = plan_segments(found, cfg.segment)
            tail = undecoded_tail(found)
            if tail is not None:
                failed.append(_undecoded(source, *tail))
            if not segments:
                failed.append(_failed(source, _no_clips(found, cfg.segment), "no_clips"))
            else:
                files[source.source_id] = str((Path(cfg.metadata) / source.provenance["file"]).resolve())
                records += [_record(source, s, found, cfg.segment) for s in segments]
        if cfg.limit and len(records) + len(failed) >= cfg.limit:
            break
    entries = sorted([*records, *failed], key=lambda e: e.clip_id if isinstance(e, ClipRecord) else e.record.clip_id)
    entries = entries[: cfg.limit] if cfg.limit else entries
    kept = [e for e in entries if isinstance(e, ClipRecord)]
    return kept, [e for e in entries if isinstance(e, ClipState)], {r.source_id: files[r.source_id] for r in kept}


def _scans(cfg: BuildConfig, sources: list[ClipRecord]) -> Iterator[tuple[ClipRecord, dict[str, Any]]]:
    """``(source, scan payload)`` in the order of ``sources``: from the work area's cache, else
    from a Ray task (one CPU each, a few submitted ahead, so stopping early wastes little;
    what is still queued when the caller stops is cancelled)."""
    work = WorkArea(cfg.work_dir)
    model = Path(cfg.face_model) if cfg.face_model else DEFAULT_MODEL
    model_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    scan = ray.remote(num_cpus=1)(_scan)

    def start(source: ClipRecord) -> tuple[ClipRecord, str, Any]:
        path = Path(cfg.metadata) / source.provenance["file"]  # type: ignore[arg-type]
        key = _scan_hash(cfg.segment, model_sha, path)  # type: ignore[arg-type]
        cached = work.read_marker(source.source_id, STAGE, key, kind="sources")
        return source, key, cached if cached is not None else scan.remote(str(path), str(model), cfg.segment)

    queue = iter(sources)
    ahead = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    window = deque(start(source) for source in itertools.islice(queue, ahead))
    try:
        while window:
            source, key, payload = window.popleft()
            following = next(queue, None)
            if following is not None:
                window.append(start(following))
            if not isinstance(payload, dict):
                payload = ray.get(payload)
                work.write_marker(source.source_id, STAGE, key, payload, kind="sources")
            yield source, payload
    finally:
        for _, _, payload in window:
            if not isinstance(payload, dict):
                ray.cancel(payload)


def _scan_hash(settings: SegmentSettings, model_sha: str, path: Path) -> str:
    """The cache key of one source's scan: what shapes it, and the file's size and mtime."""
    try:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        stamp = None
    return config_hash({"scan": settings.scan_settings(), "model": model_sha, "file": stamp})


def _scan(path: str, model: str, settings: SegmentSettings) -> dict[str, Any]:
    """The marker payload of one source: its scan, or why it cannot be read (a Ray task)."""
    try:
        return {"scan": scan_source(path, model, settings).to_dict()}
    except Exception as exc:  # recorded as the source's failed row; the build goes on
        return {"error": describe_error(exc), "reason": reason_of(exc, "unreadable_source")}


def _record(source: ClipRecord, segment: Segment, found: SourceScan, settings: SegmentSettings) -> ClipRecord:
    crop = None if segment.box is None else CropSpec("pixels", *segment.box, ref_width=found.width,
                                                     ref_height=found.height, pad=True)
    return dataclasses.replace(
        source, clip_id=_clip_id(source, segment.start_s), start_s=segment.start_s,
        end_s=segment.end_s, crop=crop,
        provenance={**source.provenance, "starts_at": segment.starts_at, "ends_at": segment.ends_at,
                    "crop_rule": crop_rule(settings if crop else dataclasses.replace(settings, crop="none"))})


def _clip_id(source: ClipRecord, start_s: float) -> str:
    """``<video id>-t<start in ms>``: the id of the source's row that starts at ``start_s``."""
    return f"{source.source_id}-t{round(start_s * 1000):07d}"


def _failed(source: ClipRecord, error: str, reason: str) -> ClipState:
    state = ClipState(source)
    state.fail(STAGE, error, reason)
    return state


def _undecoded(source: ClipRecord, start_s: float, end_s: float) -> ClipState:
    """The failed row of a video's end that does not decode (its span, from where decoding stopped)."""
    tail = dataclasses.replace(source, clip_id=_clip_id(source, start_s), start_s=start_s, end_s=end_s)
    return _failed(tail, f"{source.provenance['file']} stops decoding at {start_s:g} s of its {end_s:g} s "
                         "(a file cut short, or corrupt from there): no clips from that part", "corrupt_source")


def _no_clips(found: SourceScan, settings: SegmentSettings) -> str:
    sampled = -(-found.frames // DETECT_STEP)
    return (f"no stretch of at least {settings.min_clip_s:g} s with a face in one shot: a face on "
            f"{len(found.faces)} of {sampled} sampled frames, {len(found.scene_cuts)} scene cuts, "
            f"{found.duration_s:g} s")
