"""Lmk2Video training: frames and pose images from real shards, stage-1/2 items, and the
stage-1/2 trainers on tiny random models (CPU), with checkpoints and resume (also from a
checkpoint of the layout before format versions)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import cv2  # noqa: F401  (before decord)
import numpy as np
import pytest
import torch
import webdataset as wds

from aniportrait.format import LANDMARKS, read_array
from pipelines.training.frames import draw_pose_frames, has_face, pose_frames, read_frames, video_length
from pipelines.training.lmk2video_samples import SampleSettings, Stage1Decoder, Stage2Decoder, face_starts, window_indices
from pipelines.training.stream import ShardStream, expand_shards

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def raw_samples(feature_shards: Path) -> dict[str, dict]:
    """The fixture's three clips as raw webdataset samples (bytes per member)."""
    return {s["__key__"]: s for s in wds.WebDataset(expand_shards(str(feature_shards)), shardshuffle=False)}


def test_frames_decode_in_memory_in_the_asked_order(raw_samples: dict[str, dict]) -> None:
    sample = raw_samples["LylTalking_1"]
    assert video_length(sample["mp4"]) == 120
    full = read_frames(sample["mp4"], [5, 0, 5])
    assert full.shape == (3, 256, 256, 3) and full.dtype == np.uint8
    assert np.array_equal(full[0], full[2]) and not np.array_equal(full[0], full[1])
    small = read_frames(sample["mp4"], [5], (SIZE, SIZE))
    assert small.shape == (1, SIZE, SIZE, 3)
    # the decoder's resize is a resize: close to OpenCV's area resize of the full frame
    reference = cv2.resize(full[0], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    assert np.abs(small[0].astype(int) - reference.astype(int)).mean() < 6
    with pytest.raises(IndexError, match="out of range"):
        read_frames(sample["mp4"], [120])


def test_drawn_pose_images_equal_the_stored_pose_video(raw_samples: dict[str, dict]) -> None:
    """Both pose sources give the same official image: pose.mp4 is lossless."""
    sample = raw_samples["Radio10_0"]
    indices = [0, 17, 59]
    drawn = pose_frames(sample, indices, (256, 256), "draw")
    decoded = pose_frames(sample, indices, (256, 256), "video")
    assert drawn.any() and np.array_equal(drawn, decoded)
    # a frame without a face has a black pose image
    no_face = np.zeros(len(has_face(sample)), bool)
    assert not draw_pose_frames(read_array(sample, LANDMARKS), no_face, [3], (SIZE, SIZE)).any()
    with pytest.raises(ValueError, match="unknown pose source"):
        pose_frames(sample, indices, (SIZE, SIZE), "png")  # type: ignore[arg-type]


def test_window_indices_follow_the_official_sampler() -> None:
    rng = random.Random(0)
    for _ in range(20):
        stride4 = window_indices(100, 16, 4, rng)
        assert len(stride4) == 16 and np.all(np.diff(stride4) == 4) and 0 <= stride4[0] and stride4[-1] < 100
    short = window_indices(10, 16, 1, rng)  # a clip shorter than the window repeats frames, as official
    assert short[0] == 0 and short[-1] == 9 and len(short) == 16
    face = np.ones(30, bool)
    face[10] = False
    assert face_starts(face, 5) == [0, 1, 2, 3, 4, 5] + list(range(11, 26))
    assert face_starts(face, 31) == []


def test_stage1_items(raw_samples: dict[str, dict]) -> None:
    settings = SampleSettings(SIZE, SIZE, seed=3, per_clip=3)
    sample = raw_samples["LylTalking_0"]
    items = list(Stage1Decoder(settings)(sample))
    assert len(items) == 3
    for item in items:
        for name in ("target", "reference", "pose"):
            assert item[name].shape == (3, SIZE, SIZE) and item[name].dtype == np.uint8
        target = read_frames(sample["mp4"], [item["target_index"]], (SIZE, SIZE))[0]
        assert np.array_equal(item["target"], target.transpose(2, 0, 1))
        pose = pose_frames(sample, [item["target_index"]], (SIZE, SIZE))[0]
        assert np.array_equal(item["pose"], pose.transpose(2, 0, 1)) and item["pose"].any()
    again = list(Stage1Decoder(settings)(sample))
    assert [i["target_index"] for i in again] == [i["target_index"] for i in items]
    other = list(Stage1Decoder(SampleSettings(SIZE, SIZE, seed=4, per_clip=3))(sample))
    assert [(i["target_index"], i["reference_index"]) for i in other] != \
        [(i["target_index"], i["reference_index"]) for i in items]


def test_stage2_windows(raw_samples: dict[str, dict]) -> None:
    sample = raw_samples["LylTalking_1"]  # 120 frames: both strides fit
    strides = set()
    for seed in range(6):
        item = next(iter(Stage2Decoder(SampleSettings(SIZE, SIZE, seed=seed))(sample)))
        assert item["frames"].shape == item["poses"].shape == (16, 3, SIZE, SIZE)
        assert item["reference"].shape == (3, SIZE, SIZE)
        steps = set(np.diff(item["indices"]).tolist())
        assert len(steps) == 1
        strides |= steps
        frames = read_frames(sample["mp4"], item["indices"].tolist(), (SIZE, SIZE))
        assert np.array_equal(item["frames"], frames.transpose(0, 3, 1, 2))
    assert strides == {1, 4}
    # a window that cannot avoid a missing face falls back to stride 1, then gives nothing
    gappy = dict(sample)
    face = np.ones(120, bool)
    face[::20] = False
    gappy["has_face.npy"] = face
    assert all(np.all(np.diff(i["indices"]) == 1) for s in range(4)
               for i in Stage2Decoder(SampleSettings(SIZE, SIZE, seed=s))(gappy))
    face[::10] = False
    assert list(Stage2Decoder(SampleSettings(SIZE, SIZE))(gappy)) == []


def test_training_items_stream_from_the_shards_with_new_draws_each_epoch(feature_shards: Path) -> None:
    from itertools import islice

    from pipelines.training.lmk2video import EpochStream, Lmk2VideoTrainConfig
    from pipelines.training.stream import StreamPosition

    config = Lmk2VideoTrainConfig(stage=1, shards=[str(feature_shards)], out="unused", model="tiny", size=SIZE,
                                  per_clip=2, shuffle_buffer=4)
    stream = EpochStream(config)
    items = list(islice(stream, 12))  # 3 clips x 2 items: two epochs
    assert stream.position == StreamPosition(1, 6)
    assert {tuple(i["target"].shape) for i in items} == {(3, SIZE, SIZE)}
    draws = [sorted((int(i["target_index"]), int(i["reference_index"])) for i in items[e * 6:(e + 1) * 6])
             for e in (0, 1)]
    assert draws[0] != draws[1]
    resumed = list(islice(EpochStream(config, position=StreamPosition(0, 4)), 8))  # the rest, as it was
    assert all(np.array_equal(a["target"], b["target"]) for a, b in zip(resumed, items[4:]))


# ---- trainers (tiny random models, CPU) ---------------------------------------------------



def _config(feature_shards: Path, out: Path, stage: int, **overrides):
    from pipelines.training.lmk2video import Lmk2VideoTrainConfig

    values = dict(stage=stage, shards=[str(feature_shards)], out=str(out), model="tiny", size=SIZE,
                  batch_size=2 if stage == 1 else 1, steps=3, lr=1e-3, shuffle_buffer=4,
                  checkpoint_every=1, log_every=1, seed=0, progress=False)
    return Lmk2VideoTrainConfig(**{**values, **overrides})


def _trainer_and_batch(config):
    from pipelines.training.lmk2video import Lmk2VideoTrainer, build_stage_models, stage_decoder
    from pipelines.training.stream import batches

    torch.manual_seed(config.seed)
    trainer = Lmk2VideoTrainer(config, build_stage_models(config), torch.device("cpu"))
    decoder = stage_decoder(config)
    stream = ShardStream(expand_shards(config.shards), decoder, seed=0, shuffle_buffer=1, members=decoder.settings.members)
    return trainer, next(batches(stream, config.batch_size))


def _eval_loss(trainer, batch) -> float:
    """The loss of ``batch`` under fixed draws (noise, timesteps, drops), comparable across steps."""
    from pipelines.training.lmk2video import step_generator

    with torch.no_grad():
        return float(np.mean([float(trainer.loss(batch, step_generator(1234, 0, k, torch.device("cpu"))))
                              for k in range(3)]))


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def stage1_run(feature_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step stage-1 run through the full loop (stream, checkpoints, official files)."""
    from pipelines.training.lmk2video import train

    out = tmp_path_factory.mktemp("stage1") / "run"
    result = train(_config(feature_shards, out, 1, steps=2))
    assert result.checkpoint.name == "step-00000002.pt" and [step for step, _ in result.losses] == [1, 2]
    return out


def test_stage1_overfits_a_batch_and_trains_the_stage1_modules(feature_shards: Path, tmp_path: Path) -> None:
    trainer, batch = _trainer_and_batch(_config(feature_shards, tmp_path, 1))
    assert batch["target"].shape == (2, 3, SIZE, SIZE)
    m = trainer.models
    before = {name: _state(getattr(m, name)) for name in ("vae", "image_encoder", "reference_unet",
                                                          "denoising_unet", "pose_guider")}
    first = _eval_loss(trainer, batch)
    losses = [trainer.train_step(batch, step) for step in range(5)]
    last = _eval_loss(trainer, batch)
    assert all(np.isfinite(losses)) and last < 0.85 * first, (first, last, losses)

    def changed(name: str, prefix: str = "") -> bool:
        after = getattr(m, name).state_dict()
        return any(not torch.equal(before[name][k], after[k]) for k in after if k.startswith(prefix))

    assert not changed("vae") and not changed("image_encoder")
    assert changed("denoising_unet") and changed("pose_guider") and changed("reference_unet", "down_blocks.")
    assert not changed("reference_unet", "up_blocks.3.")  # frozen, as the official stage 1


def test_stage1_loss_is_the_min_snr_weighted_velocity_mse(feature_shards: Path, tmp_path: Path) -> None:
    """The stage-1 loss recomputed by hand from the same generator draws, in the trainer's draw order:
    VAE samples (targets, references), drops, noise, noise offset, timesteps."""
    from pipelines.inference.lmk2video import clip_pixels
    from pipelines.training.lmk2video import min_snr_weights, step_generator, to_unit_range

    trainer, batch = _trainer_and_batch(_config(feature_shards, tmp_path, 1, uncond_ratio=0.5))
    m, scheduler, c = trainer.models, trainer.scheduler, trainer.config
    gamma, offset, scaling = 5.0, 0.05, trainer.lmk2video_config.vae_scaling
    assert (c.snr_gamma, c.noise_offset, scheduler.config.prediction_type) == (gamma, offset, "v_prediction")

    # min-SNR weights on the real train scheduler; zero terminal SNR: t=999 has snr 0, weight 1
    alphas = scheduler.alphas_cumprod.double()
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    snr = alphas[t] / (1 - alphas[t])
    expected = torch.minimum(snr + 1, torch.full_like(snr, gamma)) / (snr + 1)
    weights = min_snr_weights(scheduler, t, gamma)
    assert torch.allclose(weights.double(), expected, rtol=1e-5) and float(weights[-1]) == 1.0
    assert float(weights[0]) < 0.01 < float(weights[3])

    generator = step_generator(7, 0, 0, torch.device("cpu"))
    with torch.no_grad():
        loss = float(trainer.loss(batch, generator))
        m.reference_attention.clear()
        g = step_generator(7, 0, 0, torch.device("cpu"))
        target_px, reference_px = to_unit_range(batch["target"]), to_unit_range(batch["reference"])
        x0 = m.vae.encode(target_px).latent_dist.sample(generator=g)[:, :, None] * scaling  # (B,4,1,h,w)
        reference = m.vae.encode(reference_px).latent_dist.sample(generator=g) * scaling
        keep = torch.rand(2, generator=g) >= 0.5
        assert keep.any() and not keep.all()  # one sample drops the condition: the masked reference attention
        clip = clip_pixels(batch["reference"].permute(0, 2, 3, 1).numpy(), m.image_encoder.config.image_size)
        context = m.image_encoder(clip).image_embeds[:, None]
        noise = torch.randn(x0.shape, generator=g) + offset * torch.randn((2, 4, 1, 1, 1), generator=g)
        timesteps = torch.randint(0, 1000, (2,), generator=g)
        a = alphas[timesteps].float().view(2, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        velocity = a.sqrt() * noise - (1 - a).sqrt() * x0
        prediction = trainer.net(noisy, timesteps, reference, context * keep[:, None, None],
                                 to_unit_range(batch["pose"]), keep)
        m.reference_attention.clear()
    snr = alphas[timesteps] / (1 - alphas[timesteps])
    w = (torch.minimum(snr + 1, torch.full_like(snr, gamma)) / (snr + 1)).float()
    by_hand = float((((prediction - velocity) ** 2).mean(dim=(1, 2, 3, 4)) * w).mean())
    assert loss == pytest.approx(by_hand, rel=1e-5, abs=1e-7)
    # the hand-written velocity is diffusers' v-prediction target
    assert torch.allclose(scheduler.get_velocity(x0, noise, timesteps), velocity, atol=1e-5)


def test_stage1_run_writes_official_files_and_resumes_exactly(feature_shards: Path, stage1_run: Path,
                                                              tmp_path: Path) -> None:
    from models.lmk2video import Lmk2VideoConfig, build_models
    from models.official_weights import load_lmk2video_weights
    from pipelines.training.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint, save_checkpoint
    from pipelines.training.lmk2video import train

    assert [p.name for p in list_checkpoints(stage1_run)] == ["step-00000001.pt", "step-00000002.pt"]
    rows = (stage1_run / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert all(np.isfinite(float(r.split(",")[2])) for r in rows[1:])
    saved = json.loads((stage1_run / "lmk2video_config.json").read_text())
    assert saved == json.loads(json.dumps(Lmk2VideoConfig.tiny().to_dict()))
    config = Lmk2VideoConfig.from_dict(saved)
    files = {k: stage1_run / f"{k}.pth" for k in ("pose_guider", "reference_unet", "denoising_unet")}
    load_lmk2video_weights(build_models(config), files)  # strict loads of the official layout

    state = read_checkpoint(latest_checkpoint(stage1_run))
    assert state.kind == "lmk2video-stage1" and state.step == 2 and state.extra == {"scaler": None}
    assert list(state.models) == ["pose_guider", "reference_unet", "denoising_unet"] and len(state.rng) == 1
    assert state.config["model"] == Lmk2VideoConfig.tiny().to_dict() and state.config["train"]["stage"] == 1
    # trained with pose images in [-1, 1]: recorded, and what inference then uses by default
    from pipelines.inference.conventions import recorded_pose_feed

    assert state.config["inference"] == {"pose_feed": "unit"} and recorded_pose_feed(stage1_run) == "unit"

    # 2 steps + resume to 3 == 3 steps straight (same draws, same stream position)
    resumed = tmp_path / "resumed"
    shutil.copytree(stage1_run, resumed)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(_config(feature_shards, resumed, 1, steps=3))
    train(_config(feature_shards, resumed, 1, steps=3, resume=True))
    # the same from the step-2 checkpoint as the trainer wrote it before format versions (no rng states)
    from_v1 = tmp_path / "version1"
    shutil.copytree(stage1_run, from_v1)
    for path in list_checkpoints(from_v1):
        path.unlink()
    save_checkpoint(from_v1 / "checkpoints" / "step-00000002.pt", {
        "kind": "lmk2video", "stage": 1, "train_config": state.config["train"], "model_config": state.config["model"],
        "positions": state.stream, "step": state.step, "modules": state.models, "optimizer": state.optimizer,
        "scaler": None})
    train(_config(feature_shards, from_v1, 1, steps=3, resume=True))
    with pytest.raises(ValueError, match="is a lmk2video-stage1 checkpoint, not lmk2video-stage2"):
        train(_config(feature_shards, from_v1, 2, steps=4, resume=True, init=str(stage1_run)))
    straight = tmp_path / "straight"
    train(_config(feature_shards, straight, 1, steps=3, checkpoint_every=3))
    assert latest_checkpoint(resumed).name == latest_checkpoint(straight).name == "step-00000003.pt"
    assert len(list_checkpoints(resumed)) == 2  # keep_checkpoints
    for name in files:
        b = torch.load(straight / f"{name}.pth", weights_only=True)
        for run in (resumed, from_v1):
            a = torch.load(run / f"{name}.pth", weights_only=True)
            assert a.keys() == b.keys()
            assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), (run.name, name)
    c = torch.load(stage1_run / "denoising_unet.pth", weights_only=True)
    assert any(not torch.equal(c[k], b[k]) for k in c)  # the third step did change the weights


def test_stage2_trains_only_the_motion_modules(feature_shards: Path, stage1_run: Path, tmp_path: Path) -> None:
    from pipelines.training.lmk2video import motion_state

    trainer, batch = _trainer_and_batch(_config(feature_shards, tmp_path, 2, init=str(stage1_run)))
    assert batch["frames"].shape == (1, 16, 3, SIZE, SIZE) and batch["poses"].shape == (1, 16, 3, SIZE, SIZE)
    m = trainer.models
    frozen = {name: _state(getattr(m, name)) for name in ("reference_unet", "pose_guider")}
    unet_before = _state(m.denoising_unet)
    first = _eval_loss(trainer, batch)
    losses = [trainer.train_step(batch, step) for step in range(4)]
    last = _eval_loss(trainer, batch)
    assert all(np.isfinite(losses)) and last < first, (first, last, losses)
    for name, state in frozen.items():  # BatchNorm buffers included: batch statistics leave them alone
        after = getattr(m, name).state_dict()
        assert all(torch.equal(state[k], after[k]) for k in after), name
    after = m.denoising_unet.state_dict()
    motion = set(motion_state(m.denoising_unet))
    assert motion and all(".motion_modules." in k and ".temporal_transformer." in k for k in motion)
    assert all(torch.equal(unet_before[k], after[k]) for k in after if k not in motion)
    assert any(not torch.equal(unet_before[k], after[k]) for k in motion)


def test_gradient_checkpointing_and_bf16_keep_the_step(feature_shards: Path, stage1_run: Path, tmp_path: Path) -> None:
    """Checkpointed UNets recompute the reference attention and motion modules in backward:
    the update equals the plain one; bf16 autocast gives nearly the fp32 loss."""
    from pipelines.training.lmk2video import motion_state

    def one_step(**overrides):
        trainer, batch = _trainer_and_batch(_config(feature_shards, tmp_path, 2, init=str(stage1_run),
                                                    window_frames=4, **overrides))
        loss = trainer.train_step(batch, 0)
        return loss, motion_state(trainer.models.denoising_unet)

    plain_loss, plain = one_step()
    checkpointed_loss, checkpointed = one_step(gradient_checkpointing=True)
    assert checkpointed_loss == pytest.approx(plain_loss, abs=1e-6)
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-6) for k in plain)
    bf16_loss, _ = one_step(mixed_precision="bf16")
    assert np.isfinite(bf16_loss) and bf16_loss == pytest.approx(plain_loss, rel=0.1)


def test_cli_stage2_writes_the_motion_module_file(feature_shards: Path, stage1_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app
    from models.lmk2video import Lmk2VideoConfig, add_motion_modules, build_models
    from models.official_weights import load_motion_weights

    runner = CliRunner()
    out = tmp_path / "stage2"
    args = ["train", "stage2", "--shards", str(feature_shards), "--out", str(out), "--init", str(stage1_run),
            "--config", "tiny", "--size", str(SIZE), "--steps", "1", "--window", "4", "--threads", "1"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    motion = load_motion_weights(out / "motion_module.pth")
    unet = build_models(Lmk2VideoConfig.tiny()).denoising_unet
    add_motion_modules(unet, Lmk2VideoConfig.tiny())
    assert set(motion) == {k for k in unet.state_dict() if ".motion_modules." in k}
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    official = runner.invoke(app, ["train", "stage1", "--shards", str(feature_shards), "--out", str(tmp_path / "x")])
    assert official.exit_code == 2 and "--vae" in official.output
