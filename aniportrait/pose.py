"""6D head poses as AniPortrait stores them: ``[rx, ry, rz, tx, ty, tz]``.

Rotations are scipy's extrinsic ``'xyz'`` Euler angles in degrees, translations the
last column of the 4x4 pose matrix (cm).
"""

from __future__ import annotations

import numpy as np


def _rotation():  # -> scipy.spatial.transform.Rotation
    """scipy's ``Rotation``, imported on first use: ``scipy.spatial`` takes 0.15 s to import,
    which the build driver (it imports this module through the stages) never needs."""
    from scipy.spatial.transform import Rotation

    return Rotation


def matrix_to_pose6d(mat: np.ndarray) -> np.ndarray:
    """6D pose (..., 6) of 4x4 pose matrices (..., 4, 4)."""
    mat = np.asarray(mat, dtype=np.float64)
    euler = _rotation().from_matrix(mat[..., :3, :3]).as_euler("xyz", degrees=True)
    return np.concatenate([euler, mat[..., :3, 3]], axis=-1)


def pose6d_to_matrix(pose: np.ndarray) -> np.ndarray:
    """4x4 pose matrices (..., 4, 4) of 6D poses (..., 6)."""
    pose = np.asarray(pose, dtype=np.float64)
    mat = np.zeros(pose.shape[:-1] + (4, 4))
    mat[..., :3, :3] = _rotation().from_euler("xyz", pose[..., :3], degrees=True).as_matrix()
    mat[..., :3, 3] = pose[..., 3:]
    mat[..., 3, 3] = 1.0
    return mat


def smooth_pose(seq: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean of a pose sequence (L, 6), as the official code smooths.

    Frame ``i`` averages frames ``[max(0, i - w//2), min(L, i + w//2 + 1))``: the window
    shrinks at both ends. Bit-identical to the official per-frame ``np.mean``.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    seq = np.asarray(seq, dtype=np.float64)
    length, half = len(seq), window // 2
    # Zero padding leaves each partial sum unchanged, so the result is exact.
    padded = np.pad(seq, ((half, half), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)
    idx = np.arange(length)
    counts = np.minimum(length, idx + half + 1) - np.maximum(0, idx - half)
    return windows.sum(axis=-1) / counts[:, None]


def relative_poses(mats: np.ndarray) -> np.ndarray:
    """Pose matrices (L, 4, 4) relative to the first frame: ``inv(T0) @ Ti``."""
    mats = np.asarray(mats, dtype=np.float64)
    return np.linalg.inv(mats[0]) @ mats


def fill_gaps(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``values`` (N, ...) with the rows where ``valid`` is False linearly interpolated in time
    from the valid rows (the ends hold the nearest valid row), as float64.

    Serves 1-D series too: the sync estimate fills the mouth opening's NaN frames with
    ``fill_gaps(mouth, np.isfinite(mouth))``. No valid row raises :class:`ValueError`."""
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no valid frame to interpolate from")
    if valid.all():
        return np.asarray(values, np.float64)
    flat = np.asarray(values, np.float64).reshape(len(values), -1)
    index, known = np.arange(len(values)), np.flatnonzero(valid)
    out = np.stack([np.interp(index, known, flat[known, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape(np.shape(values))


def relative_pose6d(mats: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """6D poses (N, 6) relative to the first frame with a face (``inv(T0) @ Ti``); the
    frames without a face are interpolated from their neighbours (:func:`fill_gaps`)."""
    has_face = np.asarray(has_face, bool)
    if not has_face.any():
        raise ValueError("no frame with a face")
    pose = np.zeros((len(has_face), 6))
    pose[has_face] = matrix_to_pose6d(relative_poses(np.asarray(mats, np.float64)[has_face]))
    return fill_gaps(pose, has_face)
