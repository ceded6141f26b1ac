"""Face reenactment from a video: track the source's faces, then retarget them (:mod:`aniportrait.retarget`).

:func:`reenact` gives the source's expression and head motion on a portrait;
:func:`reference_pose` the head motion of a pose reference video, as the official
``pose_temp``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aniportrait.face import FaceArrays, face_arrays
from aniportrait.landmarks import FaceLandmarkerRunner
from aniportrait.pose import relative_pose6d, smooth_pose
from aniportrait.retarget import FPS, Motion, PortraitFace, resample, retarget, tile_mirrored

#: Smoothing window of the official reference head pose.
REFERENCE_POSE_SMOOTH = 5


def track_faces(video: str | Path, landmarker: FaceLandmarkerRunner) -> tuple[FaceArrays, float]:
    """Per-frame face arrays of ``video`` and its frame rate."""
    track = landmarker.track(video)
    if len(track.has_face) == 0:
        raise ValueError(f"cannot read any frame of {Path(video).name}")
    return face_arrays(track), track.fps


def reenact(video: str | Path, portrait: PortraitFace, landmarker: FaceLandmarkerRunner,
            fps: float = FPS) -> Motion:
    """The source ``video``'s motion retargeted onto ``portrait``, at ``fps``."""
    source, src_fps = track_faces(video, landmarker)
    return retarget(source, src_fps, portrait, fps)


def reference_pose(video: str | Path, landmarker: FaceLandmarkerRunner, frames: int, fps: float = FPS) -> np.ndarray:
    """A head-pose sequence (frames, 6) from a pose reference video, as the official
    ``pose_temp``: relative to its first frame, resampled to ``fps``, smoothed (window 5),
    then played forth and back (mirrored) and tiled to ``frames``."""
    source, src_fps = track_faces(video, landmarker)
    if not source.has_face.any():
        raise ValueError(f"no face found in the pose video {Path(video).name}")
    pose = smooth_pose(resample(relative_pose6d(source.trans_mat, source.has_face), src_fps, fps),
                       REFERENCE_POSE_SMOOTH)
    return tile_mirrored(pose, frames)
