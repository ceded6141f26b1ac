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


def _trained_heads() -> dict[str, torch.nn.Module]:
    """Tiny heads as the Audio2Lmk trainer builds them (no wav2vec2), the mesh head "trained" to move the lips."""
    from models.audio2mesh import Audio2MeshModel
    from models.audio2pose import Audio2PoseModel

    torch.manual_seed(0)
    mesh = Audio2MeshModel(audio_dim=32, hidden=32)
    torch.nn.init.normal_(mesh.out_fn.weight, std=0.1)
    return {"audio2mesh": mesh, "audio2pose": Audio2PoseModel(audio_dim=32, hidden=32, heads=2, layers=2, ffn=64)}


def _trainer_state(model: torch.nn.Module) -> dict:
    """The parts of a trainer checkpoint besides the model: optimizer, one rank's stream and rng."""
    optimizer = torch.optim.AdamW(model.parameters())
    return {"optimizer": optimizer.state_dict(), "stream": [{"epoch": 0, "samples": 4}],
            "rng": [{"torch": torch.get_rng_state()}]}


@pytest.fixture(scope="module")
def trained_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Trainer checkpoints in the current layout (:class:`TrainerCheckpoint`): head only (no wav2vec2)."""
    from pipelines.training.checkpoint import TrainerCheckpoint, save_checkpoint

    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for kind, model in _trained_heads().items():
        config = {k: v for k, v in model.config.items() if not k.startswith("_")}
        checkpoint = TrainerCheckpoint(kind=kind, step=1, models={kind: model.state_dict()},
                                       config={"train": {"kind": kind}, "model": config}, **_trainer_state(model))
        paths.append(save_checkpoint(folder / f"{kind}.pt", checkpoint.to_dict()))
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
    pose post-processing, landmarks projected inside the image."""
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


def test_version_1_checkpoints_load_as_before(tmp_path: Path, tiny_wav2vec2: Path) -> None:
    """Checkpoints of the Audio2Lmk trainer before format versions (its dict written out here as that
    code wrote it: config dataclasses as dicts) still load at inference, with the same weights."""
    from pipelines.inference.audio2lmk import load_audio_model
    from pipelines.training.checkpoint import save_checkpoint

    old_configs = {  # dataclasses.asdict of that code's Audio2MeshConfig / Audio2PoseConfig
        "audio2mesh": {"audio_dim": 32, "hidden": 32, "num_vertices": 468, "wav2vec2": None},
        "audio2pose": {"audio_dim": 32, "hidden": 32, "heads": 2, "layers": 2, "ffn": 64, "num_ids": 100,
                       "max_len": 600, "pose_dim": 6, "dropout": 0.1, "wav2vec2": None}}
    for kind, model in _trained_heads().items():
        save_checkpoint(tmp_path / f"{kind}.pt", {
            "kind": kind, "step": 3, "model": model.state_dict(), **_trainer_state(model),
            "config": {"model": old_configs[kind], "train": {"kind": kind, "steps": 3}}})
        loaded, conventions = load_audio_model(tmp_path / f"{kind}.pt", kind)
        assert conventions == {}  # written before checkpoints recorded them: inference uses the trained defaults
        assert type(loaded) is type(model) and loaded.audio_encoder is None
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    models = Audio2Lmk.from_checkpoints(str(tmp_path / "audio2mesh.pt"), str(tmp_path / "audio2pose.pt"),
                                        wav2vec2=str(tiny_wav2vec2))
    assert models.pose_model.config.layers == 2
    assert (models.pose_postprocess.rotation_scale, models.pose_postprocess.smooth) == (1.0, 7)  # trained here


def test_unreadable_or_foreign_checkpoints_name_the_file(tmp_path: Path) -> None:
    from pipelines.inference.audio2lmk import load_audio_model
    from pipelines.training.checkpoint import save_checkpoint

    junk = tmp_path / "audio2mesh.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*audio2mesh.pt"):
        load_audio_model(junk, "audio2mesh")
    save_checkpoint(tmp_path / "future.pt", {"format_version": 99, "kind": "audio2mesh"})
    with pytest.raises(ValueError, match="future.pt has checkpoint format version 99, but this code reads versions "
                                         "1 to 2"):
        load_audio_model(tmp_path / "future.pt", "audio2mesh")
    save_checkpoint(tmp_path / "official.pt", {"in_fn.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"official.pt \(an official audio2mesh file\?\): .* missing"):
        load_audio_model(tmp_path / "official.pt", "audio2mesh")


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
