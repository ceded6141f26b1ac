"""Parity with the official AniPortrait code and the conventions that belong to the weights.

- Lmk2Video: the golden fixture (``fixtures/golden/official_lmk2video_tiny.npz``, the OFFICIAL
  pipeline run on tiny random weights) loaded into our modules through the official file layout:
  its frames for both pose feeds and its single stage-1 training step.
- Audio2Pose: the features inference gives the model are the ones the trainer learns from; a
  tiny model trained here on a known head motion is played back by ``predict-landmarks`` at full
  amplitude, while an official-format ``audio2pose.pt`` still gets the official halving.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds

from aniportrait.audio import Wav2Vec2Features, load_audio, normalize
from aniportrait.pose import pose6d_to_matrix, smooth_pose
from models.lmk2video import Lmk2VideoConfig, Lmk2VideoNet, build_models
from models.official_weights import OFFICIAL_FILES, load_into
from pipelines.inference.conventions import (CONVENTIONS_FILE, OFFICIAL_POSTPROCESS, TRAINED_POSTPROCESS,
                                             TRAINER_CONFIG_FILE, recorded_pose_feed)
from pipelines.inference.lmk2video import IMAGE_ENCODER_FOLDER, VAE_FOLDER, Lmk2Video, pose_input

GOLDEN = Path("fixtures") / "golden" / "official_lmk2video_tiny.npz"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- Lmk2Video golden fixture


@pytest.fixture(scope="module")
def golden(shared_dir: Path) -> dict[str, Any]:
    """Every array of the golden fixture, and its configs (``config_json``) decoded."""
    with np.load(shared_dir / GOLDEN) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["config"] = json.loads(str(arrays.pop("config_json")))
    return arrays


def _weights(golden: dict[str, Any], module: str) -> dict[str, torch.Tensor]:
    """The fixture's ``w/<module>/<official key>`` tensors as a state dict."""
    prefix = f"w/{module}/"
    return {name[len(prefix):]: torch.from_numpy(value) for name, value in golden.items() if name.startswith(prefix)}


def _config(golden: dict[str, Any]) -> Lmk2VideoConfig:
    """Our config of the fixture's modules (OFFICIAL_FORMAT.md, "Using it with our code")."""
    config = golden["config"]
    return Lmk2VideoConfig(unet=config["unet_tiny_kwargs"],
                           vae={k: v for k, v in config["vae_kwargs"].items() if k != "scaling_factor"},
                           image_encoder=config["image_encoder_kwargs"],
                           pose_guider=dict(channels=32, attention_heads=16, attention_head_dim=4, norm_num_groups=32),
                           motion_heads=8)


@pytest.fixture(scope="module")
def official_folder(golden: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's weights as an official ``pretrained_model/`` folder: the four ``.pth`` files
    under their official names and keys, the VAE and the CLIP image encoder as saved folders."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = tmp_path_factory.mktemp("official_lmk2video")
    for module, name in OFFICIAL_FILES.items():
        torch.save(_weights(golden, module), folder / name)
    config = _config(golden)
    vae = AutoencoderKL(**config.vae, scaling_factor=config.vae_scaling)
    load_into(vae, _weights(golden, "vae"), "golden vae")
    vae.save_pretrained(folder / VAE_FOLDER)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder))
    load_into(encoder, _weights(golden, "image_encoder"), "golden image_encoder")
    encoder.save_pretrained(folder / IMAGE_ENCODER_FOLDER)
    return folder


def _uint8_error(ours: np.ndarray, official: np.ndarray) -> int:
    return int(np.abs(ours.astype(np.int16) - official.astype(np.int16)).max())


def test_official_files_reproduce_the_official_pipeline_in_both_feeds(golden: dict[str, Any],
                                                                      official_folder: Path) -> None:
    """Official files default to the official feed (2v-1 of uint8 pixels); both feeds give the
    official frames within 1/255 (the official run truncates to uint8, we round)."""
    run = golden["config"]["run"]
    generator = Lmk2Video.from_pretrained(official_folder, config=_config(golden))
    assert generator.pose_feed == "official"
    official_out, unit_out = golden["out_official_feed"], golden["out_unit_feed"]
    assert _uint8_error(official_out, unit_out) > 100  # the two feeds give different videos
    kwargs = dict(steps=run["num_inference_steps"], guidance=run["guidance_scale"], seed=run["seed"],
                  context_frames=run["context_frames"], context_overlap=run["context_overlap"], progress=False)
    ours = generator.generate(golden["in/reference"], golden["in/poses"], **kwargs)
    assert ours.shape == official_out.shape and _uint8_error(ours, official_out) <= 1
    ours_unit = generator.generate(golden["in/reference"], golden["in/poses"], pose_feed="unit", **kwargs)
    assert _uint8_error(ours_unit, unit_out) <= 1


def test_a_recorded_feed_is_the_default_and_an_explicit_one_overrides(golden: dict[str, Any], official_folder: Path,
                                                                     tmp_path: Path) -> None:
    """Weights our trainer wrote carry ``inference.json`` (unit feed); loading takes it. A folder of
    our trainer from before that file (its ``lmk2video_config.json`` only) is unit too."""
    trained = tmp_path / "trained"
    shutil.copytree(official_folder, trained)
    (trained / CONVENTIONS_FILE).write_text(json.dumps({"pose_feed": "unit"}))
    assert Lmk2Video.from_pretrained(trained, config=_config(golden)).pose_feed == "unit"
    assert Lmk2Video.from_pretrained(trained, config=_config(golden), pose_feed="official").pose_feed == "official"
    (trained / CONVENTIONS_FILE).write_text(json.dumps({"pose_feed": "raw"}))
    with pytest.raises(ValueError, match="pose_feed.*official, unit"):
        Lmk2Video.from_pretrained(trained, config=_config(golden))
    (trained / CONVENTIONS_FILE).unlink()
    assert recorded_pose_feed(trained) == "official"
    (trained / TRAINER_CONFIG_FILE).write_text(json.dumps(_config(golden).to_dict()))
    assert recorded_pose_feed(trained) == "unit"


def test_pose_input_is_contiguous_in_both_ranges(golden: dict[str, Any]) -> None:
    """A channels-last view of the frames becomes a contiguous tensor (CPU BatchNorm is far less
    accurate on channels-last float32); the unit feed is the official training input."""
    frames = torch.from_numpy(golden["in/poses"][:2]).permute(0, 3, 1, 2)
    assert not frames.is_contiguous()
    unit, official = pose_input(frames, "unit"), pose_input(frames, "official")
    assert unit.is_contiguous() and official.is_contiguous()
    torch.testing.assert_close(unit[:1], torch.from_numpy(golden["step/pose"][:, :, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(official, frames.float() * 2 - 1)
    assert official.max() == 2 * int(golden["in/poses"][:2].max()) - 1


def test_one_stage1_training_forward_matches_the_official_step(golden: dict[str, Any]) -> None:
    """The official ``train_stage_1.py`` Net.forward on one frame: PoseGuider maps (batch statistics
    of that frame), ReferenceNet bank at t=0, denoising UNet; with and without the reference."""
    config = _config(golden)
    models = build_models(config)
    for module in ("pose_guider", "reference_unet", "denoising_unet"):
        load_into(getattr(models, module), _weights(golden, module), f"golden {module}")
    net = Lmk2VideoNet(models, stage=1).train()
    pose = pose_input(torch.from_numpy(golden["in/poses"][:1]).permute(0, 3, 1, 2), "unit")
    latents, timestep = torch.from_numpy(golden["step/latents"]), torch.from_numpy(golden["step/timestep"])
    reference, context = torch.from_numpy(golden["mid/ref_latents"]), torch.from_numpy(golden["mid/clip_embeds"])
    with torch.no_grad():
        features = models.pose_guider(pose)
        for level, ours in enumerate(features):
            # float32 convolutions sum in a CPU's own order (AVX2 and AVX-512 kernels differ by
            # up to 5e-5 here), the same bound as the predictions' below
            torch.testing.assert_close(ours, torch.from_numpy(golden[f"step/pose_fea{level}"][:, :, 0]),
                                       atol=1e-4, rtol=1e-4)
        predictions = {}
        for name, keep in (("noise_pred_fp32bank", True), ("noise_pred_noref", False)):
            predictions[name] = net(latents, timestep, reference, context, pose, torch.tensor([keep]))
            models.reference_attention.clear()
    for name, ours in predictions.items():
        assert float((ours - torch.from_numpy(golden[f"step/{name}"])).abs().max()) < 1e-4, name
    # the official bank is float16: that run differs from ours by its rounding only
    assert float((predictions["noise_pred_fp32bank"] - torch.from_numpy(golden["step/noise_pred"])).abs().max()) < 1e-4


# ---------------------------------------------------------------------------- Audio2Pose


@pytest.fixture(scope="module")
def shard_samples(feature_shards: Path) -> dict[str, dict]:
    """The sample shard's clips (real audio, tiny wav2vec2 features), as webdataset reads them."""
    return {s["__key__"]: s for s in wds.WebDataset(str(feature_shards / "sample-train-000000.tar"),
                                                    shardshuffle=False)}


def _wave(sample: dict, folder: Path) -> np.ndarray:
    """A shard sample's 16 kHz audio (its ``wav`` member), decoded as inference decodes audio."""
    path = folder / f"{sample['__key__']}.wav"
    path.write_bytes(sample["wav"])
    return load_audio(path)


def _tiny_pose_model(tiny_wav2vec2: Path):  # -> Audio2PoseModel with the tiny wav2vec2 inside
    from models.audio2pose import Audio2PoseModel
    from models.wav2vec import load_audio_encoder

    torch.manual_seed(0)
    model = Audio2PoseModel(**{**Audio2PoseModel.tiny_config(), "wav2vec2": None}).eval()
    model.set_audio_encoder(load_audio_encoder(str(tiny_wav2vec2)))
    return model


def _features_seen(model, wave: np.ndarray, frames: int) -> np.ndarray:
    """The features Audio2Pose's inference hands its audio projection (``in_fn``) for ``wave``."""
    seen = []
    handle = model.in_fn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0][0].clone()))
    try:
        model.infer(torch.from_numpy(normalize(wave))[None], frames, torch.tensor([0]))
    finally:
        handle.remove()
    assert len(seen) == 1  # one encoding of the whole utterance
    return seen[0].numpy()


def test_audio2pose_inference_sees_the_training_features(shard_samples: dict[str, dict], tiny_wav2vec2: Path,
                                                         media_dir: Path, tmp_path: Path) -> None:
    """Training windows slice the clip's cached whole-utterance features; inference encodes the
    utterance once and slices it the same way, so both see the same features (to the cache's
    float16), also past the 5 s chunks where the official per-chunk encoding differs."""
    from aniportrait.audio import frame_count
    from pipelines.training.windows import Audio2LmkWindows

    model = _tiny_pose_model(tiny_wav2vec2)
    for sample in shard_samples.values():
        cached = np.load(io.BytesIO(sample["wav2vec.npy"])).astype(np.float32)
        seen = _features_seen(model, _wave(sample, tmp_path), len(cached))
        np.testing.assert_allclose(seen, cached, atol=4e-3, rtol=2e-3)
        for window in Audio2LmkWindows(window=30)(sample):
            valid, start = int(window["mask"].sum()), window["start"]
            np.testing.assert_allclose(window["features"][:valid], seen[start:start + valid], atol=4e-3, rtol=2e-3)
    wave = load_audio(media_dir / "speech_lyl.wav")
    wave = np.tile(wave, 2)[:12 * 16000]  # 12 s: chunks [0, 150) and [150, 360)
    frames = frame_count(len(wave), 30)
    seen = _features_seen(model, wave, frames)
    built = Wav2Vec2Features(str(tiny_wav2vec2))(normalize(wave), frames)  # the build's audio stage
    np.testing.assert_allclose(seen, built, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the official script would encode the second chunk on its own
        chunk = model.audio_encoder(torch.from_numpy(normalize(wave))[None, 80_000:], frames - 150)[0].numpy()
    assert np.abs(chunk - built[150:]).max() > 10 * np.abs(seen - built).max() + 1e-3


#: The known head motion (degrees): pitch and yaw sinusoids over the 90-frame clip, zero at frame 0.
_FRAMES = np.arange(90)
KNOWN_MOTION = np.zeros((90, 6))
KNOWN_MOTION[:, 0] = 10 * np.sin(2 * np.pi * _FRAMES / 90)
KNOWN_MOTION[:, 1] = 20 * (np.sin(2 * np.pi * _FRAMES / 90 + 1.0) - np.sin(1.0))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def known_motion_run(shard_samples: dict[str, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real clip (its audio and features) whose head follows :data:`KNOWN_MOTION`, and a tiny
    Audio2Pose (plus a 1-step Audio2Mesh) trained on it here."""
    from pipelines.training.audio2lmk import Audio2LmkTrainConfig, train
    from pipelines.training.windows import MEMBERS

    folder = tmp_path_factory.mktemp("known_motion")
    clip = shard_samples["LylTalking_0"]
    mats = np.load(io.BytesIO(clip["trans_mat.npy"])).astype(np.float64)
    assert len(mats) == len(KNOWN_MOTION)
    moved = {"trans_mat.npy": _npy((mats[0] @ pose6d_to_matrix(KNOWN_MOTION)).astype(np.float32)),
             "has_face.npy": _npy(np.ones(len(mats), bool))}
    shard = folder / "known-000000.tar"
    with wds.TarWriter(str(shard)) as writer:
        writer.write({"__key__": clip["__key__"], **{m: clip[m] for m in MEMBERS}, **moved})
    audio = folder / "clip.wav"
    audio.write_bytes(clip["wav"])
    common = dict(shards=[str(shard)], batch_size=1, window=len(mats), shuffle_buffer=1, progress=False, threads=1)
    pose = train(Audio2LmkTrainConfig(kind="audio2pose", out=str(folder / "pose"), steps=400, lr=3e-3,
                                      weight_decay=0.0, checkpoint_every=400, log_every=100,
                                      model_overrides={"dropout": 0.0}, **common))
    mesh = train(Audio2LmkTrainConfig(kind="audio2mesh", out=str(folder / "mesh"), steps=1, **common))
    return {"pose": pose.checkpoint, "mesh": mesh.checkpoint, "audio": audio}


def _predict(run: dict[str, Path], pose_ckpt: Path, out: Path, media_dir: Path, tiny_wav2vec2: Path,
             *extra: str) -> np.ndarray:
    """``predict-landmarks`` on the clip's audio; returns its ``pose6d.npy``."""
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, [
        "predict-landmarks", "--audio", str(run["audio"]), "--portrait", str(media_dir / "portrait_lyl.png"),
        "--out", str(out), "--mesh-ckpt", str(run["mesh"]), "--pose-ckpt", str(pose_ckpt),
        "--wav2vec2", str(tiny_wav2vec2), "--size", "128", *extra])
    assert result.exit_code == 0, result.output
    return np.load(out / "pose6d.npy")


def _amplitude(poses: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares scale of ``truth`` that best fits ``poses`` (1: full amplitude)."""
    return float((poses * truth).sum() / (truth * truth).sum())


def test_a_pose_model_trained_here_plays_back_at_full_amplitude(known_motion_run: dict[str, Path], media_dir: Path,
                                                               tiny_wav2vec2: Path, tmp_path: Path) -> None:
    from pipelines.inference.audio2lmk import load_audio_model
    from pipelines.training.windows import identity_index

    _, conventions = load_audio_model(known_motion_run["pose"], "audio2pose")
    assert conventions == TRAINED_POSTPROCESS.to_dict() == {"pose_rotation_scale": 1.0, "pose_smooth": 7}
    pose_id = str(identity_index("LylTalking"))  # the identity it was trained as
    played = _predict(known_motion_run, known_motion_run["pose"], tmp_path / "trained", media_dir, tiny_wav2vec2,
                      "--pose-id", pose_id)
    truth = smooth_pose(KNOWN_MOTION, TRAINED_POSTPROCESS.smooth)
    for axis in (0, 1):  # pitch, yaw
        assert 0.85 < _amplitude(played[:, axis], truth[:, axis]) < 1.15, axis
        assert np.corrcoef(played[:, axis], truth[:, axis])[0, 1] > 0.95, axis
    halved = _predict(known_motion_run, known_motion_run["pose"], tmp_path / "halved", media_dir, tiny_wav2vec2,
                      "--pose-id", pose_id, "--pose-scale", "0.5")
    np.testing.assert_allclose(halved[:, :3], played[:, :3] * 0.5, atol=1e-4)
    np.testing.assert_allclose(halved[:, 3:], played[:, 3:], atol=1e-5)


def test_an_official_pose_file_keeps_the_official_halving(known_motion_run: dict[str, Path], media_dir: Path,
                                                          tiny_wav2vec2: Path, tmp_path: Path) -> None:
    """An ``audio2pose.pt`` in the official format (official sizes, wav2vec2-base inside, random
    weights) plays at half rotation, smoothed over 7 frames; ``--pose-scale 1`` undoes the halving."""
    from models.audio2pose import Audio2PoseModel

    torch.manual_seed(0)
    official = tmp_path / "audio2pose.pt"
    torch.save(Audio2PoseModel(**Audio2PoseModel.official_config()).state_dict(), official)
    short = {**known_motion_run, "audio": tmp_path / "clip_1s.wav"}  # wav2vec2-base on CPU: keep it short
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(known_motion_run["audio"]), "-t", "1",
                    str(short["audio"])], check=True)
    default = _predict(short, official, tmp_path / "default", media_dir, tiny_wav2vec2)
    full = _predict(short, official, tmp_path / "full", media_dir, tiny_wav2vec2, "--pose-scale", "1")
    assert len(default) == 30
    assert OFFICIAL_POSTPROCESS.rotation_scale == 0.5 and np.abs(full[:, :3]).max() > 1e-3
    np.testing.assert_allclose(default[:, :3], full[:, :3] * 0.5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(default[:, 3:], full[:, 3:], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- head-motion style (pose_id)


def test_pose_id_column_and_the_drawn_default(tmp_path: Path) -> None:
    from pipelines.inference.audio2lmk import Audio2Lmk
    from pipelines.inference.jobs import JobTableError, read_jobs

    table = tmp_path / "jobs.csv"
    table.write_text("job_id,portrait,audio,source_video,pose_video,pose_id\n"
                     "a,p.png,a.wav,,,12\nb,p.png,a.wav,,,\n")
    assert [job.pose_id for job in read_jobs(table)] == [12, None]
    table.write_text("job_id,portrait,audio,source_video,pose_video,pose_id\n"
                     "c,p.png,,v.mp4,,3\nd,p.png,a.wav,,pose.mp4,3\ne,p.png,a.wav,,,-1\n")
    with pytest.raises(JobTableError) as info:
        read_jobs(table)
    message = str(info.value)
    assert "row 1 (c): pose_id picks Audio2Pose's head motion" in message and "row 2 (d): pose_id" in message
    assert "row 3 (e): pose_id must be a whole number >= 0" in message
    models = Audio2Lmk.random_tiny(seed=0)
    drawn = [models.drawn_pose_id(seed) for seed in range(50)]
    assert drawn == [models.drawn_pose_id(seed) for seed in range(50)]  # reproducible
    assert drawn[42] == random.Random(42).randrange(100) and len(set(drawn)) > 20 and max(drawn) < 100
