"""Audio2Lmk training windows cut from one shard sample (a clip).

A window is ``window`` consecutive frames of a clip: its cached wav2vec2 features and
the two targets, with a per-frame mask of the frames that have a face.

- **Mesh offset** (Audio2Mesh): ``lmks3d[t] - reference``, where ``reference`` is the
  clip's most neutral face: the face frame with the lowest sum of MediaPipe blendshape
  scores (``_neutral``, score 0, left out); frame 0 with a face when the sample has no
  ``blendshapes.npy``. ``lmks3d`` is the canonical (pose-free) mesh, so the offset is the
  expression alone, as the model adds it to a portrait's own ``lmks3d`` at inference.
- **Pose** (Audio2Pose): 6D poses relative to the window's first frame
  (``inv(T0) @ Ti`` -> ``[rx, ry, rz, tx, ty, tz]``, :mod:`aniportrait.pose`), matching
  inference, which generates each 150-frame chunk from a zero pose. Frames without a
  face get a pose interpolated from the window's face frames (:func:`~aniportrait.pose.fill_gaps`),
  as they are the teacher-forcing input of the next frame.
- **Identity** (Audio2Pose): a stable hash (sha1) of the clip's ``source_id`` (the
  speaker's video) modulo the model's identity count (``num_ids``, 100 by default).

Windows start every ``stride`` frames (default: ``window``, no overlap). A last window
shorter than ``window`` is kept when it holds at least ``window // 2`` frames, padded
with zeros and masked; a window is dropped when under ``min_face`` of its frames have a
face, or its first frame has none (no pose reference).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from aniportrait.face import neutral_frame
from aniportrait.format import BLENDSHAPES, HAS_FACE, MESH, META, TRANS_MAT, WAV2VEC, read_array, read_meta
from aniportrait.pose import relative_pose6d
from aniportrait.render import POSE_IMAGE_PARTS

#: Tar members a window needs.
MEMBERS = frozenset(m.name for m in (META, WAV2VEC, MESH, TRANS_MAT, HAS_FACE, BLENDSHAPES))
#: The mesh vertices of the lips: those of the 8 lip polylines of the official pose image.
LIP_VERTICES: tuple[int, ...] = tuple(sorted({i for edges, _ in POSE_IMAGE_PARTS[-8:] for edge in edges for i in edge}))
NUM_IDS = 100


def identity_index(source_id: str, num_ids: int = NUM_IDS) -> int:
    """The identity embedding row of a speaker: sha1 of ``source_id`` modulo ``num_ids``."""
    return int.from_bytes(hashlib.sha1(source_id.encode()).digest()[:8], "big") % num_ids


def _pad(array: np.ndarray, length: int) -> np.ndarray:
    return np.pad(array, [(0, length - len(array))] + [(0, 0)] * (array.ndim - 1))


@dataclass(frozen=True)
class Audio2LmkWindows:
    """``decode`` for :class:`~pipelines.training.stream.ShardStream`: sample -> window dicts.

    Each window: ``features`` (W, D) float32, ``mesh_offset`` (W, 468, 3) float32,
    ``pose`` (W, 6) float32, ``mask`` (W,) float32 (1 = face frame), ``id_index`` int,
    ``clip`` str, ``start`` int.
    """

    window: int
    stride: int | None = None
    min_face: float = 0.5
    num_ids: int = NUM_IDS

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2 frames, got {self.window}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    def __call__(self, sample: dict[str, Any]) -> list[dict[str, Any]]:
        record = read_meta(sample)["record"]
        features = read_array(sample, WAV2VEC).astype(np.float32)
        lmks3d = read_array(sample, MESH).astype(np.float32)
        mats = read_array(sample, TRANS_MAT).astype(np.float64)
        has_face = read_array(sample, HAS_FACE).astype(bool)
        blendshapes = read_array(sample, BLENDSHAPES, required=False)
        frames = len(has_face)
        if not len(features) == len(lmks3d) == len(mats) == frames:
            raise ValueError(f"sample {sample['__key__']}: frame counts differ (wav2vec {len(features)}, "
                             f"lmks3d {len(lmks3d)}, trans_mat {len(mats)}, has_face {frames})")
        if not has_face.any():
            return []
        identity = identity_index(record.get("source_id") or record["clip_id"], self.num_ids)
        offsets = lmks3d - lmks3d[neutral_frame(has_face, blendshapes)]
        windows = []
        for start in range(0, frames, self.stride or self.window):
            end = min(frames, start + self.window)
            if end - start < self.window // 2:
                break
            mask = has_face[start:end]
            if not mask[0] or mask.mean() < self.min_face:
                continue
            # Frames without a face are masked out of the loss, but their pose is still the
            # teacher-forcing input of the next frame: interpolate it from the face frames.
            pose = relative_pose6d(mats[start:end], mask)  # mask[0] holds: relative to the window's first frame
            windows.append({
                "features": _pad(features[start:end], self.window),
                "mesh_offset": _pad(offsets[start:end] * mask[:, None, None], self.window),
                "pose": _pad(pose.astype(np.float32), self.window),
                "mask": _pad(mask.astype(np.float32), self.window),
                "id_index": identity,
                "clip": sample["__key__"],
                "start": start,
            })
            if end == frames:
                break
        return windows
