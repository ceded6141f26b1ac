"""Export a built dataset to the official AniPortrait preprocessing layout.

The official training scripts read a JSON index of per-clip frame folders and per-frame
landmark files (``scripts/preprocess_dataset.py`` of Zejun-Yang/AniPortrait). This module
writes that layout from our shards::

    dest/clips/<clip_id>/<stem>.png            the frame (RGB PNG, decoded from the mp4)
    dest/clips/<clip_id>/<stem>_lmks.npy       (478, 3) float32, normalised landmarks
    dest/clips/<clip_id>/<stem>_lmks3d.npy     (468, 3) float32, canonical mesh
    dest/clips/<clip_id>/<stem>_trans_mat.npy  (4, 4) float32
    dest/clips/<clip_id>/<stem>_bs.npy         (51,) float32, blendshapes without ``_neutral``
    dest/training_data.json                    {clip_id: {"video_clip_num": 1, "clip_data_list": [...]}}

``<stem>`` is the six-digit frame index in the clip, so names sort in time order and
contain no ``_`` (the official checks split landmark names at the first ``_``). Frames
and landmark files share one folder: the official scripts accept the same folder as
frame and annotation root. Frames without a face are skipped together with their
arrays (the official script skips only the arrays, so every later frame gets the wrong
landmarks); the frame indices of the kept frames are their stems, so gaps stay visible.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.format import (
    BLENDSHAPES,
    HAS_FACE,
    LANDMARKS,
    MESH,
    TRANS_MAT,
    VIDEO,
    MissingMemberError,
    iter_samples,
    member_bytes,
    read_array,
    read_release,
)
from aniportrait.ids import UnsafePathError, contained_join
from aniportrait.media.probe import MediaError, run_tool
from aniportrait.storage import OutputDir, write_local_atomic

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
INDEX_NAME = "training_data.json"
#: Official per-frame file suffix -> our shard member.
ARRAY_MEMBERS = {"lmks": LANDMARKS, "lmks3d": MESH, "trans_mat": TRANS_MAT, "bs": BLENDSHAPES}
NUM_BLENDSHAPES = 52
_TMP_MARK = ".tmp-"


class ExportError(ValueError):
    """A clip cannot be exported (the message says which and why)."""


@dataclass
class ExportSummary:
    """What :func:`export_official` wrote and left out."""

    dest: str
    index: str
    clips_written: int = 0
    frames_written: int = 0
    frames_skipped: int = 0
    skipped_by_clip: dict[str, int] = field(default_factory=dict)
    clips_dropped: dict[str, str] = field(default_factory=dict)


def release_shards(out_uri: str) -> list[str]:
    """Names of the shards listed in the build's ``release.json``."""
    return [s["name"] for s in read_release(OutputDir.from_uri(out_uri))["shards"]]


def face_frame_indices(has_face: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Indices of the frames to export: a face was found and every array row is finite."""
    keep = np.asarray(has_face, dtype=bool).copy()
    for array in arrays:
        keep &= np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    return np.flatnonzero(keep)


def official_arrays(sample: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-frame arrays under their official names (``bs`` without ``_neutral``) and ``has_face``."""
    arrays = {name: read_array(sample, member) for name, member in ARRAY_MEMBERS.items()}
    has_face = read_array(sample, HAS_FACE)
    if arrays["bs"].ndim != 2 or arrays["bs"].shape[1] != NUM_BLENDSHAPES:
        raise ExportError(f"clip {sample['__key__']}: blendshapes are {arrays['bs'].shape}, "
                          f"expected (T, {NUM_BLENDSHAPES})")
    arrays["bs"] = arrays["bs"][:, 1:]
    lengths = {len(a) for a in arrays.values()} | {len(has_face)}
    if len(lengths) != 1:
        raise ExportError(f"clip {sample['__key__']}: per-frame arrays disagree on the frame count {sorted(lengths)}")
    return {k: v.astype(np.float32) for k, v in arrays.items()}, has_face


def frame_stem(index: int) -> str:
    return f"{index:06d}"


def decode_frames(video: bytes, folder: Path) -> int:
    """Decode every frame of the mp4 ``video`` to ``folder/<stem>.png``; return the count."""
    source = folder / ".source.mp4"
    source.write_bytes(video)
    try:
        run_tool(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source),
                  "-map", "0:v:0", "-fps_mode", "passthrough", "-start_number", "0",
                  str(folder / "%06d.png")], f"decode frames into {folder.name}")
    finally:
        source.unlink(missing_ok=True)
    return len(list(folder.glob("*.png")))


def write_clip_folder(sample: dict[str, Any], folder: Path, keep: np.ndarray,
                      arrays: dict[str, np.ndarray]) -> None:
    """Fill ``folder`` with the kept frames and their per-frame arrays."""
    total = decode_frames(member_bytes(sample, VIDEO), folder)
    frames = len(arrays["lmks"])
    if total != frames:
        raise ExportError(f"clip {sample['__key__']}: the video has {total} frames, the arrays {frames}")
    kept = set(keep.tolist())
    for index in range(frames):
        stem = frame_stem(index)
        if index not in kept:
            (folder / f"{stem}.png").unlink()
            continue
        for name, array in arrays.items():
            np.save(folder / f"{stem}_{name}.npy", array[index])


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing an older export of it."""
    old = final.with_name(f".{final.name}{_TMP_MARK}old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def index_entry(clip_id: str, folder: Path, stems: list[str]) -> dict[str, Any]:
    """The official JSON entry of one clip (absolute paths, as the training dataset opens them)."""
    return {
        "video_clip_num": 1,
        "clip_data_list": [{
            "frame_name_list": [f"{clip_id}/{s}.png" for s in stems],
            "frame_path_list": [str(folder / f"{s}.png") for s in stems],
            "lmks_list": [str(folder / f"{s}_lmks.npy") for s in stems],
        }],
    }


def export_clip(sample: dict[str, Any], clips_root: Path, min_frames: int) -> tuple[dict[str, Any], int]:
    """Export one sample; return its index entry and how many frames without a face were skipped.

    Raises :class:`ExportError` (or ``MediaError``, ``MissingMemberError``) when the clip is
    dropped, for instance when it keeps fewer than ``min_frames`` frames; an older export of
    it is removed then.
    """
    clip_id = sample["__key__"]
    final = Path(contained_join(str(clips_root), clip_id))
    try:
        arrays, has_face = official_arrays(sample)
        keep = face_frame_indices(has_face, list(arrays.values()))
        if len(keep) < min_frames:
            raise ExportError(f"{len(keep)} frames with a face, fewer than {min_frames}")
        write_clip_atomic(sample, clips_root, final, keep, arrays)
    except (ExportError, MediaError, MissingMemberError):
        shutil.rmtree(final, ignore_errors=True)  # an older export of the clip would disagree with the index
        raise
    return index_entry(clip_id, final, [frame_stem(i) for i in keep]), len(has_face) - len(keep)


def write_clip_atomic(sample: dict[str, Any], clips_root: Path, final: Path, keep: np.ndarray,
                      arrays: dict[str, np.ndarray]) -> None:
    """Write the clip folder under a temporary name, then move it to ``final``."""
    tmp = clips_root / f".{final.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_clip_folder(sample, tmp, keep, arrays)
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(clips_root: Path) -> None:
    """Delete half-written clip folders left by a killed export."""
    for path in clips_root.glob(f".*{_TMP_MARK}*"):
        shutil.rmtree(path, ignore_errors=True)


def export_official(out_uri: str, dest: Path, *, min_frames: int = 30) -> dict[str, Any]:
    """Write the official AniPortrait preprocessing layout of the build at ``out_uri`` to ``dest``.

    Returns a JSON-able summary: clips written, clips dropped (with reasons), frames
    written and frames skipped for lack of a face (in total and per clip).
    """
    if min_frames < 1:
        raise ValueError(f"min_frames must be at least 1, got {min_frames}")
    shards = release_shards(out_uri)
    dest = Path(dest).expanduser().resolve()
    clips_root = dest / CLIPS_DIR
    clips_root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(clips_root)
    summary = ExportSummary(dest=str(dest), index=str(dest / INDEX_NAME))
    index: dict[str, Any] = {}
    for sample in iter_samples(out_uri, shards):
        clip_id = sample["__key__"]
        try:
            entry, skipped = export_clip(sample, clips_root, min_frames)
        except (ExportError, MediaError, MissingMemberError, UnsafePathError) as exc:
            log.info("dropping clip %s: %s", clip_id, exc)
            summary.clips_dropped[clip_id] = str(exc)
            continue
        index[clip_id] = entry
        summary.clips_written += 1
        summary.frames_written += len(entry["clip_data_list"][0]["frame_name_list"])
        summary.frames_skipped += skipped
        if skipped:
            summary.skipped_by_clip[clip_id] = skipped
        log.info("exported %s (%d frames without a face skipped)", clip_id, skipped)
    write_local_atomic(dest / INDEX_NAME, json.dumps({k: index[k] for k in sorted(index)}).encode())
    return asdict(summary)
