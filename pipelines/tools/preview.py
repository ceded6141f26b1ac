"""Preview one clip of a built dataset: a contact sheet PNG and an overlay mp4.

Both show the clip's video with its pose image (the ``pose.mp4`` member, as training
sees it) drawn on top, so landmarks that drift off the face are easy to spot.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from aniportrait.format import (
    AUDIO,
    HAS_FACE,
    POSE_VIDEO,
    VIDEO,
    iter_samples,
    member_bytes,
    read_array,
    read_manifest,
    read_meta,
)
from aniportrait.ids import contained_join
from aniportrait.landmarks import iter_frame_chunks
from aniportrait.media.encode import encode_rgb_frames, h264_yuv420p
from aniportrait.media.probe import MediaError
from aniportrait.storage import OutputDir, write_local_atomic

log = logging.getLogger(__name__)

CHUNK_FRAMES = 32
LISTED_IDS = 5


class UnknownClipError(KeyError):
    """The clip id is not in the built dataset (the message lists some that are)."""

    def __str__(self) -> str:
        return str(self.args[0])


def clip_shard(out_uri: str, clip_id: str) -> str:
    """The shard holding ``clip_id``, looked up in ``manifest.parquet``."""
    out = OutputDir.from_uri(out_uri)
    rows = read_manifest(out, ["clip_id", "status", "shard", "error"]).to_pylist()
    row = next((r for r in rows if r["clip_id"] == clip_id), None)
    if row is None:
        ok = [r["clip_id"] for r in rows if r["status"] == "ok"]
        more = f" and {len(ok) - LISTED_IDS} more" if len(ok) > LISTED_IDS else ""
        raise UnknownClipError(f"clip {clip_id!r} is not in {out_uri}; available: "
                               f"{', '.join(ok[:LISTED_IDS]) or 'none'}{more}")
    if row["status"] != "ok":
        raise ValueError(f"clip {clip_id!r} failed during the build: {row['error']}")
    return row["shard"]


def find_sample(out_uri: str, clip_id: str) -> dict[str, Any]:
    """The WebDataset sample of ``clip_id``."""
    shard = clip_shard(out_uri, clip_id)
    for sample in iter_samples(out_uri, [shard]):
        if sample["__key__"] == clip_id:
            return sample
    raise UnknownClipError(f"clip {clip_id!r} is listed in the manifest but missing from {shard}")


def tile_indices(total: int, count: int) -> list[int]:
    """Up to ``count`` distinct, evenly spaced frame indices of a ``total``-frame clip."""
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, min(count, total))})


def iter_frames(video: Path) -> Iterator[np.ndarray]:
    """Every frame of ``video`` as (H, W, 3) uint8 RGB, decoded in bounded chunks."""
    for chunk, _ in iter_frame_chunks(video, CHUNK_FRAMES):
        yield from chunk


def overlay(frame: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """``frame`` with the non-black pixels of ``pose`` drawn over it."""
    out = frame.copy()
    mask = pose.any(axis=2)
    out[mask] = pose[mask]
    return out


def label_tile(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` written in its top-left corner (white on a dark outline)."""
    out = image.copy()
    scale = image.shape[1] / 640
    origin = (8, 8 + int(24 * scale))
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Tiles (all the same size) in rows of ``columns``; empty cells stay black."""
    height, width = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / columns)
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        sheet[row * height:(row + 1) * height, col * width:(col + 1) * width] = tile
    return sheet


def keep_tiles(frames: Iterable[np.ndarray], picks: set[int], tiles: dict[int, np.ndarray]) -> Iterator[np.ndarray]:
    """Pass ``frames`` through, storing those at the indices in ``picks`` into ``tiles``."""
    for index, frame in enumerate(frames):
        if index in picks:
            tiles[index] = frame
        yield frame


def encode_preview(frames: Iterable[np.ndarray], width: int, height: int, fps: float,
                   wav: Path | None, out: Path) -> int:
    """Encode RGB ``frames`` as H.264 (yuv420p), with ``wav`` muxed as AAC; return the frame count."""
    audio_out = ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"] if wav else []
    return encode_rgb_frames(frames, width, height, fps, out, ["-map", "0:v:0", *audio_out, *h264_yuv420p(20)],
                             inputs=["-i", str(wav)] if wav else [])


def overlay_frames(video: Path, pose: Path) -> Iterator[np.ndarray]:
    """Video frames with their pose images drawn on top; the two must have as many frames."""
    try:
        for frame, pose_image in zip(iter_frames(video), iter_frames(pose), strict=True):
            yield overlay(frame, pose_image)
    except ValueError as exc:
        raise MediaError(f"{video.name} and {pose.name} differ in frame count") from exc


def write_members(sample: dict[str, Any], folder: Path) -> tuple[Path, Path, Path | None]:
    """Write the video, pose video and (when present) wav of ``sample`` to ``folder``."""
    video, pose, wav = (folder / f"clip.{member.name}" for member in (VIDEO, POSE_VIDEO, AUDIO))
    video.write_bytes(member_bytes(sample, VIDEO))
    pose.write_bytes(member_bytes(sample, POSE_VIDEO))
    audio = member_bytes(sample, AUDIO, required=False)
    if audio is None:
        log.warning("clip %s has no audio; the overlay video is silent", sample["__key__"])
        return video, pose, None
    wav.write_bytes(audio)
    return video, pose, wav


def make_preview(out_uri: str, clip_id: str, dest: Path, *, columns: int = 4, frames: int = 8) -> tuple[Path, Path]:
    """Write ``<clip_id>_sheet.png`` and ``<clip_id>_overlay.mp4`` for one clip into ``dest``.

    The sheet holds ``frames`` evenly spaced frames in rows of ``columns``, each labelled
    with the clip id and frame index; the mp4 has every frame and the clip's audio.
    """
    if columns < 1 or frames < 1:
        raise ValueError(f"columns and frames must be at least 1, got {columns} and {frames}")
    sample = find_sample(out_uri, clip_id)
    info = read_meta(sample)["info"]
    has_face = read_array(sample, HAS_FACE)
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    sheet_path = Path(contained_join(str(dest), f"{clip_id}_sheet.png"))
    video_path = Path(contained_join(str(dest), f"{clip_id}_overlay.mp4"))
    picks = tile_indices(len(has_face), frames)
    tiles: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="preview-") as folder:
        video, pose, wav = write_members(sample, Path(folder))
        tmp = video_path.with_name(f".{video_path.name}.tmp-{os.getpid()}")
        try:
            written = encode_preview(keep_tiles(overlay_frames(video, pose), set(picks), tiles),
                                     info["width"], info["height"], info["fps"], wav, tmp)
            if written != len(has_face):
                raise MediaError(f"clip {clip_id}: the video has {written} frames, the arrays {len(has_face)}")
            os.replace(tmp, video_path)
        finally:
            tmp.unlink(missing_ok=True)
    labelled = [label_tile(tiles[i], f"{clip_id} #{i}" + ("" if has_face[i] else " no face")) for i in picks]
    sheet = cv2.cvtColor(contact_sheet(labelled, min(columns, len(labelled))), cv2.COLOR_RGB2BGR)
    write_local_atomic(sheet_path, cv2.imencode(".png", sheet)[1].tobytes())
    log.info("wrote %s and %s (%d frames)", sheet_path, video_path, written)
    return sheet_path, video_path
