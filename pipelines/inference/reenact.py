"""Face reenactment: a source video's expression and head motion retargeted onto a portrait.

Following the official ``vid2vid`` retargeting, with the head motion taken relative to
the source's first frame (as the official reference-pose script does) so the portrait
keeps its own head pose at the start:

1. MediaPipe landmarks of every source frame (:class:`~aniportrait.landmarks.FaceLandmarkerRunner`),
   canonical mesh and pose matrix per frame (:func:`~aniportrait.face.face_arrays`);
2. poses relative to the first frame, ``inv(T0) @ Ti``, as 6D poses, resampled to 30 fps
   (linear in time, ``int(N * 30 / fps)`` frames) and smoothed (window 3);
3. expression: ``mesh_i = src_i - src[most neutral frame] + portrait mesh``, the most
   neutral frame being the one with the lowest blendshape sum (``_neutral`` excluded, as
   in the official 51 scores);
4. projection with the portrait's ``trans_mat`` (:func:`aniportrait.geometry.project_points`).

Unlike the official script, a frame without a face does not end the video: its pose and
mesh are interpolated from the nearest frames with a face.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from aniportrait.face import FaceArrays, face_arrays, neutral_frame
from aniportrait.geometry import project_points
from aniportrait.landmarks import FaceLandmarkerRunner
from aniportrait.pose import fill_gaps, relative_pose6d, smooth_pose
from pipelines.inference.audio2lmk import Motion, PortraitFace

#: Smoothing windows of the official code: face reenactment, reference head pose.
REENACT_SMOOTH = 3
REFERENCE_POSE_SMOOTH = 5


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


def retarget(source: FaceArrays, src_fps: float, portrait: PortraitFace, fps: float = 30.0) -> Motion:
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


def track_faces(video: str | Path, landmarker: FaceLandmarkerRunner) -> tuple[FaceArrays, float]:
    """Per-frame face arrays of ``video`` and its frame rate."""
    track = landmarker.track(video)
    if len(track.has_face) == 0:
        raise ValueError(f"cannot read any frame of {Path(video).name}")
    return face_arrays(track), track.fps


def reenact(video: str | Path, portrait: PortraitFace, landmarker: FaceLandmarkerRunner,
            fps: float = 30.0) -> Motion:
    """The source ``video``'s motion retargeted onto ``portrait``, at ``fps``."""
    source, src_fps = track_faces(video, landmarker)
    return retarget(source, src_fps, portrait, fps)


def reference_pose(video: str | Path, landmarker: FaceLandmarkerRunner, frames: int, fps: float = 30.0) -> np.ndarray:
    """A head-pose sequence (frames, 6) from a pose reference video, as the official
    ``pose_temp``: relative to its first frame, resampled to ``fps``, smoothed (window 5),
    then played forth and back (mirrored) and tiled to ``frames``."""
    source, src_fps = track_faces(video, landmarker)
    if not source.has_face.any():
        raise ValueError(f"no face found in the pose video {Path(video).name}")
    pose = smooth_pose(resample(relative_pose6d(source.trans_mat, source.has_face), src_fps, fps),
                       REFERENCE_POSE_SMOOTH)
    return tile_mirrored(pose, frames)


def tile_mirrored(pose: np.ndarray, frames: int) -> np.ndarray:
    """``pose`` (L, 6) then its reverse without the end frames, repeated to ``frames`` rows."""
    cycle = np.concatenate([pose, pose[-2:0:-1]]) if len(pose) > 2 else np.asarray(pose)
    return np.tile(cycle, (frames // len(cycle) + 1, 1))[:frames]
