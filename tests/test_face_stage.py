"""Real MediaPipe on real faces: tracking, mesh/pose consistency, rejection, pose video."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from aniportrait.face import DEFAULT_MODEL, DEFAULT_MODEL_SHA256, FaceError, check_detection_rate, face_arrays
from aniportrait.geometry import project_points
from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings, file_sha256
from aniportrait.media.encode import encode_rgb_lossless
from aniportrait.media.probe import count_video_frames
from aniportrait.render import draw_pose_image
from pipelines.build.stages.render import pose_frames


@pytest.fixture(scope="module")
def head_track(media_dir: Path):
    runner = FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL), mode="video"))
    return runner.track(media_dir / "head_pose_ref.mp4")


def test_shipped_model_is_the_official_file(shared_dir: Path) -> None:
    assert file_sha256(DEFAULT_MODEL) == DEFAULT_MODEL_SHA256
    assert file_sha256(shared_dir / "models" / "face_landmarker_v2_with_blendshapes.task") == DEFAULT_MODEL_SHA256


def test_face_found_in_every_frame(head_track) -> None:
    assert head_track.lmks.shape == (125, 478, 3) and head_track.blendshapes.shape == (125, 52)
    assert head_track.has_face.all()
    assert (head_track.width, head_track.height, head_track.fps) == (512, 512, 25.0)


def test_mesh_projects_back_onto_the_landmarks(head_track) -> None:
    arrays = face_arrays(head_track)
    zero = np.zeros((1, 6))
    errors = []
    for i in range(0, 125, 5):
        projected = project_points(arrays.lmks3d[i], arrays.trans_mat[i], zero, 512, 512)[0]
        errors.append(np.linalg.norm(projected - arrays.lmks[i, :468, :2] * 512, axis=1).mean())
    assert max(errors) < 1.0, f"mean projection error per frame: {max(errors):.3f} px"


def test_pose_changes_smoothly(head_track) -> None:
    pose = face_arrays(head_track).pose6d
    assert np.isfinite(pose).all()
    step = np.abs(np.diff(pose[:, :3], axis=0))
    assert step.max() < 5.0, f"largest frame-to-frame rotation step {step.max():.2f} deg"
    assert np.ptp(pose[:, :3], axis=0).max() > 5.0, "the head does move in this clip"
    agree = np.abs(head_track.mp_trans_mat[:, :3, 3] - face_arrays(head_track).trans_mat[:, :3, 3]).max()
    assert agree < 0.5, "our geometry pipeline agrees with MediaPipe's own matrix (cm)"


def test_image_mode_agrees_with_video_mode(head_track, media_dir: Path) -> None:
    image = FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL), mode="image")).track(
        media_dir / "head_pose_ref.mp4")
    assert image.has_face.all()
    gap = np.abs(image.lmks[:, :, :2] - head_track.lmks[:, :, :2]).mean() * 512
    assert gap < 2.0, f"modes differ by {gap:.2f} px on average"


def test_clip_without_a_face_is_rejected(tmp_path: Path) -> None:
    video = tmp_path / "noise.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (20, 128, 128, 3), dtype=np.uint8)
    encode_rgb_lossless(iter(frames), 128, 128, 25, video)
    track = FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL))).track(video)
    assert not track.has_face.any()
    arrays = face_arrays(track)
    assert arrays.lmks3d.shape == (20, 468, 3) and np.isnan(arrays.pose6d).all()
    with pytest.raises(FaceError, match=r"face found in 0 of 20 frames \(0%\), below the required 90%"):
        check_detection_rate(track, 0.9)


def test_pose_video_is_lossless_and_keeps_frames_without_face(head_track, tmp_path: Path) -> None:
    has_face = head_track.has_face.copy()
    has_face[3] = False  # a frame without a face stays in place, black
    out = tmp_path / "pose.mp4"
    count = encode_rgb_lossless(pose_frames(head_track.lmks[:10], has_face[:10], 512, 512), 512, 512, 25, out)
    assert count == count_video_frames(out) == 10
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(10, 512, 512, 3)
    assert np.array_equal(decoded[0], draw_pose_image(head_track.lmks[0, :, :2], 512, 512, normalized=True))
    assert not decoded[3].any() and decoded[4].any()
