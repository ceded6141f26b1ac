"""Per-frame face arrays of a clip: landmarks -> canonical mesh, pose matrix and 6D pose.

Frames without a face keep their place in every array (NaN rows, ``has_face`` False), so
a missing face never shifts later frames (the official preprocessing has that bug).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aniportrait.format import BLENDSHAPES, HAS_FACE, LANDMARKS, MESH, POSE6D, TRANS_MAT, Member
from aniportrait.geometry import NUM_VERTICES, landmarks_to_mesh
from aniportrait.landmarks import FaceTrack
from aniportrait.pose import matrix_to_pose6d

DEFAULT_MODEL = Path(__file__).parent / "data" / "face_landmarker_v2_with_blendshapes.task"
DEFAULT_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


class FaceError(ValueError):
    """A clip's faces do not meet the stage's requirements (the message says why)."""

    reason = "low_face_rate"


@dataclass(slots=True)
class FaceArrays:
    """Everything the face stage stores per clip, each with T rows (one per frame)."""

    lmks: np.ndarray         # (T, 478, 3) float32, normalised landmarks
    lmks3d: np.ndarray       # (T, 468, 3) float32, canonical-space mesh
    trans_mat: np.ndarray    # (T, 4, 4) float32, canonical -> camera
    pose6d: np.ndarray       # (T, 6) float32, euler xyz degrees + translation
    blendshapes: np.ndarray  # (T, 52) float32, MediaPipe order (index 0 ``_neutral``)
    has_face: np.ndarray     # (T,) bool

    def members(self) -> dict[Member, np.ndarray]:
        """The arrays by shard member (:mod:`aniportrait.format`), in field order."""
        return {LANDMARKS: self.lmks, MESH: self.lmks3d, TRANS_MAT: self.trans_mat, POSE6D: self.pose6d,
                BLENDSHAPES: self.blendshapes, HAS_FACE: self.has_face}


def face_arrays(track: FaceTrack) -> FaceArrays:
    """Mesh, pose matrix and 6D pose for every frame of ``track`` that has a face."""
    frames = len(track.has_face)
    lmks3d = np.full((frames, NUM_VERTICES, 3), np.nan, np.float32)
    trans_mat = np.full((frames, 4, 4), np.nan, np.float32)
    pose6d = np.full((frames, 6), np.nan, np.float32)
    faces = np.flatnonzero(track.has_face)
    matrices = np.zeros((len(faces), 4, 4))
    for row, i in enumerate(faces):
        lmks3d[i], matrices[row] = landmarks_to_mesh(track.lmks[i].astype(np.float64), track.width, track.height)
    trans_mat[faces] = matrices
    if len(faces):
        pose6d[faces] = matrix_to_pose6d(matrices)  # one call for the clip: the same values as per frame
    return FaceArrays(track.lmks, lmks3d, trans_mat, pose6d, track.blendshapes, track.has_face)


def check_detection_rate(track: FaceTrack, minimum: float) -> None:
    """Raise :class:`FaceError` when too few frames have a face."""
    found, total = int(track.has_face.sum()), len(track.has_face)
    if total == 0:
        raise FaceError("the clip has no frames")
    if found / total < minimum:
        raise FaceError(f"face found in {found} of {total} frames ({found / total:.0%}), "
                        f"below the required {minimum:.0%}")


def neutral_frame(has_face: np.ndarray, blendshapes: np.ndarray | None) -> int:
    """The most neutral face frame: the lowest blendshape sum (MediaPipe's ``_neutral`` score left out);
    the first face frame when there are no blendshapes. Audio2Mesh targets and reenactment
    measure expressions from it."""
    faces = np.flatnonzero(has_face)
    if len(faces) == 0:
        raise ValueError("the clip has no frame with a face")
    if blendshapes is None:
        return int(faces[0])
    scores = blendshapes[faces, 1:].sum(axis=1)  # column 0 is MediaPipe's "_neutral"
    return int(faces[np.argmin(scores)])
