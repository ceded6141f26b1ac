"""Audio2Lmk inference: real portrait (MediaPipe) + speech -> landmarks -> pose video, via the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from aniportrait.audio import frame_count, load_audio  # noqa: E402
from aniportrait.retarget import PortraitFace  # noqa: E402
from pipelines.inference.audio2lmk import Audio2Lmk, portrait_face, pose_images  # noqa: E402
from pipelines.inference.batch import read_portrait  # noqa: E402

SIZE = 512
#: Two lip polyline colours used by nothing else in the official pose image.
LIP_ONLY_COLOURS = [(20, 10, 180), (120, 100, 200)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def face(media_dir: Path) -> PortraitFace:
    return portrait_face(read_portrait(str(media_dir / "portrait_lyl.png"), SIZE))


@pytest.fixture(scope="module")
def speech(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s of the real speech fixture."""
    out = tmp_path_factory.mktemp("speech") / "speech_2s.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(media_dir / "speech_lyl.wav"), "-t", "2",
                    str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def trained_checkpoints(tiny_wav2vec2: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Trainer checkpoints as ``pipelines.training.audio2lmk`` writes them: head only (no wav2vec2)."""
    from models.audio2mesh import Audio2MeshConfig, Audio2MeshModel
    from models.audio2pose import Audio2PoseConfig, Audio2PoseModel
    from pipelines.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for kind, model in (("audio2mesh", Audio2MeshModel(Audio2MeshConfig(audio_dim=32, hidden=32, wav2vec2=None))),
                        ("audio2pose", Audio2PoseModel(Audio2PoseConfig(audio_dim=32, hidden=32, heads=2, layers=2,
                                                                        ffn=64, wav2vec2=None)))):
        if kind == "audio2mesh":
            torch.nn.init.normal_(model.out_fn.weight, std=0.1)       # a "trained" head that moves the lips
        paths.append(save_checkpoint(folder / f"{kind}.pt", {"kind": kind, "step": 1, "model": model.state_dict(),
                                                              "config": {"model": model.config.to_dict()}}))
    return paths[0], paths[1]


def test_portrait_face_finds_the_real_face(face: PortraitFace) -> None:
    assert face.lmks3d.shape == (468, 3) and face.trans_mat.shape == (4, 4)
    assert (face.width, face.height) == (SIZE, SIZE)
    assert -45 < face.trans_mat[2, 3] < -15                    # canonical -> camera, z around -30 cm


def test_portrait_without_face_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no face found in the portrait"):
        portrait_face(np.full((256, 256, 3), 127, np.uint8))


@pytest.mark.parametrize("seconds", [1.0, 10.0])
def test_motion_one_row_per_frame(face: PortraitFace, media_dir: Path, seconds: float) -> None:
    """Real speech (tiled to 10 s: exactly two pose chunks) -> mesh = offsets + portrait mesh,
    official pose post-processing, landmarks projected inside the image."""
    speech = load_audio(media_dir / "speech_lyl.wav")
    wave = np.tile(speech, 2)[: int(seconds * 16000)]
    motion = Audio2Lmk.random_tiny(seed=0).motion(wave, face)
    frames = frame_count(len(wave), 30)
    assert motion.mesh.shape == (frames, 468, 3) and motion.pose6d.shape == (frames, 6)
    assert motion.lmks2d.shape == (frames, 468, 2)
    offsets = motion.mesh - face.lmks3d
    assert 0 < np.abs(offsets).max() < 5                        # cm: the tiny head moves the mesh a little
    inside = (motion.lmks2d > 0) & (motion.lmks2d < SIZE)
    assert inside.mean() > 0.95


def test_given_pose_replaces_audio2pose(face: PortraitFace) -> None:
    """A pose sequence (as from --pose-video) is used as is, played forth and back to the length."""
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    pose = np.zeros((12, 6))
    pose[:, 1] = np.arange(12)                                   # yaw 0..11 degrees
    motion = Audio2Lmk.random_tiny(seed=0).motion(wave, face, pose=pose)
    assert motion.pose6d.shape == (30, 6)
    assert motion.pose6d[:15, 1].tolist() == [*range(12), 10, 9, 8]


def test_checkpoints_without_wav2vec2_need_one(trained_checkpoints: tuple[Path, Path], tiny_wav2vec2: Path) -> None:
    mesh, pose = trained_checkpoints
    with pytest.raises(ValueError, match="--wav2vec2"):
        Audio2Lmk.from_checkpoints(str(mesh), str(pose))
    with pytest.raises(ValueError, match="audio2pose checkpoint, not audio2mesh"):
        Audio2Lmk.from_checkpoints(str(pose), str(pose), wav2vec2=str(tiny_wav2vec2))
    models = Audio2Lmk.from_checkpoints(str(mesh), str(pose), wav2vec2=str(tiny_wav2vec2))
    assert models.mesh_model.audio_encoder is models.pose_model.audio_encoder


def _cli(*args: str):
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, ["predict-landmarks", *args])


def test_predict_landmarks_writes_a_pose_video(speech: Path, media_dir: Path, tmp_path: Path, tiny_wav2vec2: Path,
                                               trained_checkpoints: tuple[Path, Path]) -> None:
    """Trainer checkpoints + wav2vec2 -> pose.mp4 that decodes to exactly the drawn lip-coloured images."""
    import decord

    out = tmp_path / "out"
    mesh, pose = trained_checkpoints
    result = _cli("--audio", str(speech), "--portrait", str(media_dir / "portrait_lyl.png"), "--out", str(out),
                  "--mesh-ckpt", str(mesh), "--pose-ckpt", str(pose), "--wav2vec2", str(tiny_wav2vec2))
    assert result.exit_code == 0, result.output
    lmks2d = np.load(out / "lmks2d.npy")
    assert lmks2d.shape == (60, 468, 2)
    assert np.load(out / "pose6d.npy").shape == (60, 6) and np.load(out / "mesh.npy").shape == (60, 468, 3)
    video = decord.VideoReader(str(out / "pose.mp4"))
    assert len(video) == 60 and video.get_avg_fps() == pytest.approx(30)
    frames = video.get_batch(list(range(len(video)))).asnumpy()
    assert frames.shape == (60, SIZE, SIZE, 3)
    np.testing.assert_array_equal(frames, pose_images(lmks2d, SIZE, SIZE))     # lossless
    for colour in LIP_ONLY_COLOURS:
        assert np.all(frames == colour, axis=-1).any(axis=(1, 2)).all(), colour
    mouth = np.all(np.isin(frames, [c for c in LIP_ONLY_COLOURS]), axis=-1)
    assert not np.array_equal(mouth[0], mouth[30])             # the lips move


def test_predict_landmarks_usage_errors(speech: Path, media_dir: Path, tmp_path: Path) -> None:
    result = _cli("--audio", str(speech), "--portrait", str(media_dir / "portrait_lyl.png"), "--out", str(tmp_path))
    assert result.exit_code == 2 and "--mesh-ckpt" in result.output
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
    result = _cli("--audio", str(speech), "--portrait", str(blank), "--out", str(tmp_path / "o"), "--tiny-random")
    assert result.exit_code == 2 and "no face found in the portrait" in result.output
    assert "TINY RANDOM" in result.output
    assert not (tmp_path / "o" / "pose.mp4").exists()
