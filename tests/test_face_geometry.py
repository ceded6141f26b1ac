"""Face geometry, 6D pose and pose images against the official AniPortrait outputs.

Golden data: ``fixtures/golden/official_lyl.npz`` (official code, MediaPipe 0.10.11, on
``portrait_lyl.png`` at 512x512). The stored landmarks are the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from aniportrait.geometry import (
    CANONICAL_MODEL_PATH,
    canonical_model,
    landmarks_to_mesh,
    perspective_matrix,
    project_points,
)
from aniportrait.pose import fill_gaps, matrix_to_pose6d, pose6d_to_matrix, relative_poses, smooth_pose
from aniportrait.render import canvas_pixels, draw_pose_image


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> dict[str, np.ndarray]:
    with np.load(shared_dir / "fixtures" / "golden" / "official_lyl.npz") as npz:
        return {key: npz[key] for key in npz.files}


def test_shipped_canonical_model_is_mediapipes(shared_dir: Path) -> None:
    with np.load(shared_dir / "models" / "mp_canonical_geometry.npz") as ref, \
            np.load(CANONICAL_MODEL_PATH) as ours:
        assert sorted(ref.files) == sorted(ours.files)
        for key in ref.files:
            assert np.array_equal(ref[key], ours[key]), key
    model = canonical_model()
    assert model.vertices.shape == (468, 3) and model.triangles.shape == (898, 3)
    assert np.count_nonzero(model.weights) == 33


def test_landmarks_to_mesh_matches_official(golden: dict[str, np.ndarray]) -> None:
    mesh, trans_mat = landmarks_to_mesh(golden["lyl__lmks"], 512, 512)
    assert mesh.shape == (468, 3) and trans_mat.shape == (4, 4)
    np.testing.assert_allclose(mesh, golden["lyl__lmks3d"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(trans_mat, golden["lyl__trans_mat"], rtol=0, atol=1e-4)


def test_landmarks_to_mesh_ignores_iris_points(golden: dict[str, np.ndarray]) -> None:
    full = landmarks_to_mesh(golden["lyl__lmks"], 512, 512)
    mesh_only = landmarks_to_mesh(golden["lyl__lmks"][:468], 512, 512)
    for a, b in zip(full, mesh_only):
        np.testing.assert_array_equal(a, b)


def test_landmarks_to_mesh_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        landmarks_to_mesh(np.zeros((100, 3)), 512, 512)
    with pytest.raises(ValueError):
        landmarks_to_mesh(np.full((478, 3), 0.5), 512, 512)


def test_zero_pose_projection_lands_on_input_landmarks(golden: dict[str, np.ndarray]) -> None:
    """Mesh + trans_mat projected back with the official camera hits the landmarks."""
    for width, height in [(512, 512), (640, 480)]:
        mesh, trans_mat = landmarks_to_mesh(golden["lyl__lmks"], width, height)
        pts = project_points(mesh, trans_mat, np.zeros((1, 6)), width, height)[0]
        target = golden["lyl__lmks"][:468, :2] * [width, height]
        assert np.linalg.norm(pts - target, axis=1).mean() < 1.0


def test_perspective_matrix_matches_official(golden: dict[str, np.ndarray]) -> None:
    mat = perspective_matrix(1.0)
    assert mat.dtype == np.float32 and mat.shape == (4, 4)
    np.testing.assert_array_equal(mat.ravel(), golden["perspective_matrix_aspect1_flat16"])


@pytest.mark.parametrize(
    ("key", "width", "height", "n_poses"),
    [("lyl__proj_pose_temp0_8", 512, 512, 8), ("lyl__proj_H480_W640", 640, 480, 2)],
)
def test_project_points_matches_official(
    golden: dict[str, np.ndarray], key: str, width: int, height: int, n_poses: int
) -> None:
    poses = golden["pose_temp_first8"][:n_poses]
    pts = project_points(golden["lyl__lmks3d"], golden["lyl__trans_mat"], poses, width, height)
    np.testing.assert_allclose(pts, golden[f"{key}_pts"], rtol=0, atol=1e-3)
    per_pose = np.repeat(golden["lyl__lmks3d"][None], n_poses, axis=0)
    np.testing.assert_array_equal(
        project_points(per_pose, golden["lyl__trans_mat"], poses, width, height), pts
    )


def test_pose6d_matches_official(golden: dict[str, np.ndarray]) -> None:
    pose = matrix_to_pose6d(golden["lyl__trans_mat"])
    np.testing.assert_allclose(pose[:3], golden["lyl__euler_xyz_deg"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(pose[3:], golden["lyl__translation"], rtol=0, atol=1e-4)


def test_pose6d_round_trip() -> None:
    rng = np.random.default_rng(0)
    mats = np.tile(np.eye(4), (50, 1, 1))
    mats[:, :3, :3] = Rotation.random(50, random_state=1).as_matrix()
    mats[:, :3, 3] = rng.normal(scale=10.0, size=(50, 3))
    np.testing.assert_allclose(pose6d_to_matrix(matrix_to_pose6d(mats)), mats, atol=1e-9)
    for mat in mats[:5]:
        np.testing.assert_allclose(pose6d_to_matrix(matrix_to_pose6d(mat)), mat, atol=1e-9)


@pytest.mark.parametrize("window", [3, 5, 7])
def test_smooth_pose_matches_official(golden: dict[str, np.ndarray], window: int) -> None:
    out = smooth_pose(golden["smooth_pose_seq_in"], window)
    np.testing.assert_array_equal(out, golden[f"smooth_pose_seq_w{window}"])


@pytest.mark.parametrize("window", [1, 4, 7, 51])
def test_smooth_constant_sequence_is_identity(window: int) -> None:
    seq = np.tile([1.5, -2.0, 0.25, 3.0, -0.5, 30.0], (20, 1))
    np.testing.assert_allclose(smooth_pose(seq, window), seq, rtol=1e-15)


def test_fill_gaps_interpolates_linearly_and_holds_the_ends() -> None:
    pose = np.zeros((7, 6))
    pose[1], pose[4] = np.arange(6), np.arange(6) + 3.0
    valid = np.array([False, True, False, False, True, False, False])
    filled = fill_gaps(pose, valid)
    np.testing.assert_allclose(filled[2], np.arange(6) + 1.0)
    np.testing.assert_allclose(filled[3], np.arange(6) + 2.0)
    np.testing.assert_array_equal(filled[[0, 1]], [np.arange(6)] * 2)
    np.testing.assert_array_equal(filled[4:], [np.arange(6) + 3.0] * 3)
    with pytest.raises(ValueError, match="no valid frame"):
        fill_gaps(pose, np.zeros(7, bool))


def test_relative_poses_start_at_identity() -> None:
    poses = np.random.default_rng(2).normal(size=(6, 6)) * [20, 20, 20, 1, 1, 1]
    mats = pose6d_to_matrix(poses)
    rel = relative_poses(mats)
    np.testing.assert_allclose(rel[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(mats[0] @ rel, mats, atol=1e-12)


@pytest.mark.parametrize(("width", "height", "key"), [
    (512, 512, "lyl__pose_img_512_normed"),
    (640, 480, "lyl__pose_img_640x480_normed"),
])
def test_pose_image_from_landmarks_matches_official(
    golden: dict[str, np.ndarray], width: int, height: int, key: str
) -> None:
    image = draw_pose_image(golden["lyl__lmks"], width, height, normalized=True)
    assert image.dtype == np.uint8 and image.shape == (height, width, 3)
    assert np.array_equal(image, golden[key])


@pytest.mark.parametrize(("key", "width", "height"), [
    ("lyl__proj_pose_temp0_8", 512, 512),
    ("lyl__proj_H480_W640", 640, 480),
])
def test_pose_image_from_projected_points_matches_official(
    golden: dict[str, np.ndarray], key: str, width: int, height: int
) -> None:
    for pts, expected in zip(golden[f"{key}_pts"], golden[f"{key}_imgs"]):
        assert np.array_equal(draw_pose_image(pts, width, height, normalized=False), expected)


def test_canvas_pixels_follow_mediapipe_rounding() -> None:
    pts = np.array([[0.0, 1.0], [1.0 + 1e-9, 0.5], [-1e-9, 0.5], [0.5, np.nan], [0.999, 2.0]])
    pix = canvas_pixels(pts, 1, 1, normalized=True)
    # 1 + 1e-9 rounds to 1.0 in float32 (kept); -1e-9 stays negative (dropped).
    np.testing.assert_array_equal(pix, [[0, 511], [511, 256], [-1, -1], [-1, -1], [-1, -1]])
    np.testing.assert_array_equal(
        canvas_pixels(np.array([[320.0, 240.0]]), 640, 480, normalized=False), [[256, 256]]
    )


def test_pose_image_drops_points_outside_the_frame(golden: dict[str, np.ndarray]) -> None:
    outside = golden["lyl__lmks"][:, :2] + 2.0
    assert not draw_pose_image(outside, 512, 512, normalized=True).any()
