"""MediaPipe's face-geometry pipeline and AniPortrait's projection back to the image.

:func:`landmarks_to_mesh` turns the normalised screen landmarks of one face into the
canonical-space mesh (``lmks3d``) and the canonical -> camera pose (``trans_mat``), as
MediaPipe's ``geometry_pipeline.cc`` does (newer MediaPipe releases return only the
pose). :func:`project_points` is the official AniPortrait projection of a mesh under a
head pose back to pixel landmarks, with its float32 perspective matrix.

The canonical face model (MediaPipe, Apache-2.0) ships in ``data/``; see its NOTICE.md.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aniportrait.pose import pose6d_to_matrix

DATA_DIR = Path(__file__).parent / "data"
CANONICAL_MODEL_PATH = DATA_DIR / "mp_canonical_geometry.npz"

#: MediaPipe's default environment: perspective camera, origin in the top-left corner.
VERTICAL_FOV_DEG = 63.0
NEAR = 1.0
FAR = 10000.0
#: Number of face-mesh vertices (the 10 iris landmarks of the 478 are not part of it).
NUM_VERTICES = 468
#: MediaPipe skips faces whose landmarks all lie within this normalised radius.
_TOO_COMPACT = 1e-3


class CanonicalModel(NamedTuple):
    """MediaPipe's canonical face: vertices (468, 3) cm, uv (468, 2), triangles (898, 3)
    0-based, and the Procrustes weights (468,)."""

    vertices: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray
    weights: np.ndarray


@functools.lru_cache(maxsize=1)
def canonical_model() -> CanonicalModel:
    """The canonical face model shipped in ``data/`` (arrays are read-only)."""
    with np.load(CANONICAL_MODEL_PATH) as npz:
        model = CanonicalModel(
            vertices=npz["canonical_vertices"].astype(np.float64),
            uv=npz["canonical_uv"].astype(np.float64),
            triangles=npz["triangles"].astype(np.int64),
            weights=npz["procrustes_weights"].astype(np.float64),
        )
    for array in model:
        array.flags.writeable = False
    return model


def weighted_procrustes(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """4x4 similarity ``s*R | t`` mapping ``source`` (N, 3) onto ``target`` (N, 3).

    MediaPipe's weighted orthogonal Procrustes solver (Akca 2003, section 2.4): rotation
    from the SVD of the weighted cross-covariance without reflection, least-squares
    scale, then the weighted mean residual as translation.
    """
    sqrt_w = np.sqrt(weights)[:, None]
    total = weights.sum()
    src_w = source * sqrt_w
    tgt_w = target * sqrt_w
    centre = (src_w * sqrt_w).sum(axis=0) / total
    src_cw = src_w - sqrt_w * centre
    u, _, vt = np.linalg.svd(tgt_w.T @ src_cw)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        u[:, 2] *= -1.0
    rotation = u @ vt
    scale = np.sum((src_cw @ rotation.T) * tgt_w) / np.sum(src_cw * src_w)
    rot_scale = scale * rotation
    translation = ((tgt_w - src_w @ rot_scale.T) * sqrt_w).sum(axis=0) / total
    mat = np.eye(4)
    mat[:3, :3] = rot_scale
    mat[:3, 3] = translation
    return mat


def landmarks_to_mesh(lmks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical-space mesh (468, 3) and pose ``trans_mat`` (4, 4) of one face.

    ``lmks`` are MediaPipe's normalised landmarks (478 or 468, 3) of a ``width`` x
    ``height`` frame; only the first 468 are used. The screen points are put on the near
    plane of a 63 deg perspective camera, two Procrustes passes against the canonical
    model estimate the scale that unprojects them to metric (cm) space, a final fit gives
    ``trans_mat`` (canonical -> camera) and its inverse maps the metric points back to
    canonical space.
    """
    lmks = np.asarray(lmks, dtype=np.float64)
    if lmks.ndim != 2 or lmks.shape[0] < NUM_VERTICES or lmks.shape[1] != 3:
        raise ValueError(f"expected (>= {NUM_VERTICES}, 3) landmarks, got {lmks.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    spread = np.linalg.norm(lmks[:, :2] - lmks[:, :2].mean(axis=0), axis=1).max()
    if spread <= _TOO_COMPACT:
        raise ValueError("landmarks are too compact to estimate a face geometry")

    model = canonical_model()
    height_at_near = 2.0 * NEAR * np.tan(0.5 * np.radians(VERTICAL_FOV_DEG))
    width_at_near = width * height_at_near / height
    pts = lmks[:NUM_VERTICES]
    # Screen -> near plane; the origin is the top-left corner, so y is flipped.
    x = pts[:, 0] * width_at_near - 0.5 * width_at_near
    y = (1.0 - pts[:, 1]) * height_at_near - 0.5 * height_at_near
    z = pts[:, 2] * width_at_near
    depth_offset = z.mean()

    def unproject(scale: float) -> np.ndarray:
        depth = (z - depth_offset + NEAR) / scale
        # Screen space is left-handed, metric space right-handed: z changes sign.
        return np.stack([x * depth / NEAR, y * depth / NEAR, -depth], axis=1)

    def estimate_scale(points: np.ndarray) -> float:
        mat = weighted_procrustes(model.vertices, points, model.weights)
        return float(np.linalg.norm(mat[:3, 0]))

    # 1st pass on the projected points (the relative z cannot be unprojected yet).
    first = estimate_scale(np.stack([x, y, -z], axis=1))
    second = estimate_scale(unproject(first))
    metric = unproject(first * second)
    trans_mat = weighted_procrustes(model.vertices, metric, model.weights)
    inv = np.linalg.inv(trans_mat)
    mesh = metric @ inv[:3, :3].T + inv[:3, 3]
    return mesh, trans_mat


def perspective_matrix(aspect: float) -> np.ndarray:
    """AniPortrait's flat float32 perspective matrix as (4, 4), row-major.

    ``f = 1/tan(31.5 deg)``; elements [0] = f/aspect, [5] = -f (top-left origin),
    [10] = (n+f)/(n-f), [11] = -1, [14] = far*near/(near-far). It is used transposed.
    """
    f = 1.0 / np.tan(np.radians(VERTICAL_FOV_DEG) / 2.0)
    flat = np.zeros(16, dtype=np.float32)
    flat[0] = f / aspect
    flat[5] = -f
    flat[10] = (NEAR + FAR) / (NEAR - FAR)
    flat[11] = -1.0
    flat[14] = FAR * NEAR / (NEAR - FAR)
    return flat.reshape(4, 4)


def project_points(
    mesh: np.ndarray, trans_mat: np.ndarray, poses: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Pixel landmarks (L, N, 2) of ``mesh`` under ``trans_mat @ E(pose_i)``.

    ``mesh`` is one canonical mesh (N, 3) shared by all poses or one per pose (L, N, 3);
    ``poses`` are 6D poses (L, 6) (degrees, translation). As in the official code:
    ``clip = [p, 1] @ (T @ E).T @ P.T`` with the float32 perspective matrix ``P`` of
    aspect ``width / height``, then ``(clip_xy / clip_w + 1) / 2 * (W, H)``.
    """
    poses = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    mesh = np.asarray(mesh, dtype=np.float64)
    hom = np.concatenate([mesh, np.ones(mesh.shape[:-1] + (1,))], axis=-1)
    if hom.ndim == 2:
        hom = np.broadcast_to(hom, (len(poses),) + hom.shape)
    if len(hom) != len(poses):
        raise ValueError(f"{len(hom)} meshes for {len(poses)} poses")
    model_view = np.asarray(trans_mat, dtype=np.float64) @ pose6d_to_matrix(poses)
    proj = perspective_matrix(width / height).T
    clip = hom @ np.swapaxes(model_view, -1, -2) @ proj
    ndc = clip[..., :2] / clip[..., 3:4]
    return (ndc + 1.0) * 0.5 * np.array([width, height], dtype=np.float64)
