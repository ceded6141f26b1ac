"""Reenactment maths: a source's per-frame faces retargeted onto a portrait (pure, no I/O).

Following the official ``vid2vid`` retargeting, with the head motion taken relative to
the source's first frame (as the official reference-pose script does) so the portrait
keeps its own head pose at the start:

1. poses relative to the first frame, ``inv(T0) @ Ti``, as 6D poses, resampled to 30 fps
   (linear in time, ``int(N * 30 / fps)`` frames) and smoothed (window 3);
2. expression: ``mesh_i = src_i - src[most neutral frame] + portrait mesh``, the most
   neutral frame being the one with the lowest blendshape sum (``_neutral`` excluded, as
   in the official 51 scores);
3. projection with the portrait's ``trans_mat`` (:func:`aniportrait.geometry.project_points`).

Unlike the official script, a frame without a face does not end the video: its pose and
mesh are interpolated from the nearest frames with a face. The landmark tracking of the
source video is :mod:`pipelines.inference.reenact`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aniportrait.face import FaceArrays, neutral_frame
from aniportrait.geometry import project_points
from aniportrait.pose import fill_gaps, relative_pose6d, smooth_pose

#: AniPortrait's frame rate: its models are trained on and generate 30 fps video.
FPS = 30.0
#: Smoothing window of the official face reenactment.
REENACT_SMOOTH = 3


@dataclass(frozen=True, slots=True)
class PortraitFace:
    """The portrait's face: canonical mesh (468, 3), canonical -> camera pose (4, 4), image size."""

    lmks3d: np.ndarray
    trans_mat: np.ndarray
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Motion:
    """Per video frame: mesh (T, 468, 3), 6D pose (T, 6), projected landmarks (T, 468, 2) in pixels."""

    mesh: np.ndarray
    pose6d: np.ndarray
    lmks2d: np.ndarray


def resampled_length(frames: int, src_fps: float, fps: float) -> int:
    """Frames at ``fps`` covering ``frames`` at ``src_fps``: ``int(frames * fps / src_fps)``, at least 1."""
    return max(1, math.floor(frames * fps / src_fps + 1e-6))


def resample(values: np.ndarray, src_fps: float, fps: float) -> np.ndarray:
    """Linear resampling in time of a sequence (N, ...) from ``src_fps`` to ``fps``.

    As the official reference-pose script: both time axes span ``[0, N / src_fps]``
    (``np.linspace``), the new one with :func:`resampled_length` points.
    """
    values = np.asarray(values, np.float64)
    count = resampled_length(len(values), src_fps, fps)
    if len(values) == 1:
        return np.repeat(values, count, axis=0)
    duration = len(values) / src_fps
    old, new = np.linspace(0, duration, len(values)), np.linspace(0, duration, count)
    flat = values.reshape(len(values), -1)
    out = np.stack([np.interp(new, old, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape((count,) + values.shape[1:])


def retarget(source: FaceArrays, src_fps: float, portrait: PortraitFace, fps: float = FPS) -> Motion:
    """Retarget the source's per-frame faces onto ``portrait`` (see the module docstring)."""
    has_face = np.asarray(source.has_face, bool)
    if not has_face.any():
        raise ValueError("no face found in the source video")
    pose = smooth_pose(resample(relative_pose6d(source.trans_mat, has_face), src_fps, fps), REENACT_SMOOTH)
    neutral = neutral_frame(has_face, source.blendshapes)
    expression = fill_gaps(source.lmks3d, has_face) - source.lmks3d[neutral].astype(np.float64)
    mesh = resample(expression, src_fps, fps) + np.asarray(portrait.lmks3d, np.float64)
    lmks2d = project_points(mesh, portrait.trans_mat, pose, portrait.width, portrait.height)
    return Motion(mesh.astype(np.float32), pose.astype(np.float32), lmks2d.astype(np.float32))


def tile_mirrored(pose: np.ndarray, frames: int) -> np.ndarray:
    """``pose`` (L, 6) then its reverse without the end frames, repeated to ``frames`` rows."""
    cycle = np.concatenate([pose, pose[-2:0:-1]]) if len(pose) > 2 else np.asarray(pose)
    return np.tile(cycle, (frames // len(cycle) + 1, 1))[:frames]
