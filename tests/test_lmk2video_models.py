"""Lmk2Video models and generator: official checkpoint layouts, PoseGuider, motion modules,
reference attention, schedulers and tiny end-to-end generation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.lmk2video import (Lmk2VideoConfig, add_motion_modules, build_models, inference_scheduler,
                              train_scheduler)
from models.official_weights import load_into, load_sd15_unets, motion_adapter_to_official
from models.pose_guider import PoseGuider, batch_statistics
from models.unets import MotionModule, build_denoising_unet, denoise
from pipelines.inference.lmk2video import Lmk2Video, context_windows

DTYPES = {"float32": torch.float32, "int64": torch.int64}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manifest(shared_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """Meta tensors with the keys, shapes and dtypes of an official checkpoint."""
    entries = json.loads((shared_dir / "official_checkpoints" / f"{name}.json").read_text())["state_dict"]
    return {k: torch.empty(v[:-1], dtype=DTYPES[v[-1]], device="meta") for k, v in entries.items()}


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}




@pytest.fixture(scope="module")
def official_meta():
    """Full-size official modules on the meta device (shapes only), stage-1 and stage-2 denoising UNets."""
    config = Lmk2VideoConfig.official()
    with torch.device("meta"):
        models = build_models(config, vae=nn.Identity(), image_encoder=nn.Identity())
        video_unet = build_denoising_unet(config.unet)
        add_motion_modules(video_unet, config)
    return models, video_unet


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = Lmk2VideoConfig.tiny()
    return config, build_models(config)


@pytest.mark.parametrize("name", ["pose_guider", "reference_unet", "denoising_unet"])
def test_official_checkpoints_load_intoly(official_meta, shared_dir, name):
    models, _ = official_meta
    module = getattr(models, name)
    state = manifest(shared_dir, f"{name}.pth")
    assert shapes(module.state_dict()) == shapes(state)
    load_into(module, state, name, assign=True)


def test_stage2_unet_holds_denoising_and_motion_files(official_meta, shared_dir):
    _, video_unet = official_meta
    unet_state = manifest(shared_dir, "denoising_unet.pth")
    motion_state = manifest(shared_dir, "motion_module.pth")
    assert len(motion_state) == 588 and all(".motion_modules." in k for k in motion_state)
    assert shapes(video_unet.state_dict()) == shapes(unet_state | motion_state)
    with pytest.raises(ValueError, match="588 missing"):
        load_into(video_unet, unet_state, "denoising_unet")
    load_into(video_unet, unet_state | motion_state, "denoising_unet + motion_module", assign=True)


def test_pose_guider_maps(official_meta, tiny):
    models, _ = official_meta
    with torch.device("meta"):
        maps = models.pose_guider(torch.zeros(2, 3, 512, 512))
    assert [tuple(m.shape) for m in maps] == [(2, 320, 64, 64), (2, 320, 32, 32), (2, 640, 16, 16),
                                              (2, 1280, 8, 8), (2, 1280, 8, 8)]
    guider = tiny[1].pose_guider.eval()
    nn.init.normal_(guider.final_proj.weight, std=0.1)  # zero-initialised: the maps would not depend on the pose
    running = {k: v.clone() for k, v in guider.state_dict().items() if "running" in k or "num_batches" in k}
    pose = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad(), batch_statistics(guider):
        batch = guider(pose)
    assert [tuple(m.shape) for m in batch] == [(3, 32, 8, 8), (3, 32, 4, 4), (3, 64, 2, 2), (3, 128, 1, 1),
                                               (3, 128, 1, 1)]
    assert not guider.training and all(torch.equal(guider.state_dict()[k], v) for k, v in running.items())
    with torch.no_grad():
        assert not torch.allclose(guider(pose)[1], batch[1])  # running statistics give another result


@pytest.mark.parametrize("model_cls, config", [
    (PoseGuider, {"channels": 32, "attention_heads": 2, "attention_head_dim": 8, "norm_num_groups": 8}),
    (MotionModule, {"channels": 32, "heads": 2, "max_frames": 8, "norm_num_groups": 8}),
])
def test_save_pretrained_round_trip(tmp_path, model_cls, config):
    """The diffusers pattern: config and weights saved together, the same module back."""
    torch.manual_seed(4)
    model = model_cls(**config)
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)  # zero-initialised layers too: the round trip must carry them
    model.save_pretrained(tmp_path)
    loaded = model_cls.from_pretrained(tmp_path)
    assert type(loaded) is model_cls and {k: loaded.config[k] for k in config} == config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_motion_adapter_converter_places_values_and_matches_diffusers(tiny):
    from diffusers import MotionAdapter

    config, _ = tiny
    torch.manual_seed(1)
    adapter = MotionAdapter(block_out_channels=config.unet["block_out_channels"], motion_layers_per_block=1,
                            motion_mid_block_layers_per_block=1, motion_num_attention_heads=config.motion_heads,
                            motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
    for p in adapter.parameters():
        nn.init.normal_(p, std=0.2)
    converted = motion_adapter_to_official(adapter.state_dict())
    unet = build_denoising_unet(config.unet)
    modules = add_motion_modules(unet, config)
    assert {k for k in unet.state_dict() if ".motion_modules." in k} == set(converted)
    load_into(unet, {k: v for k, v in unet.state_dict().items() if ".motion_modules." not in k} | converted, "mm")
    own = unet.state_dict()
    assert all(torch.equal(own[k], v) for k, v in converted.items())
    # same computation: with identical frames, per-frame and joint GroupNorm agree
    frames = 4
    x = torch.randn(2, 1, 32, 4, 4).expand(2, frames, 32, 4, 4).reshape(2 * frames, 32, 4, 4)
    with torch.no_grad():
        ours = modules[0](x, frames)
        theirs = adapter.down_blocks[0].motion_modules[0](x, num_frames=frames)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)  # positions make identical frames differ


def test_motion_modules_start_as_identity_then_mix_frames(tiny):
    config, _ = tiny
    torch.manual_seed(2)
    unet = build_denoising_unet(config.unet).eval()
    latents, context = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 1, 32)
    changed = latents.clone()
    changed[:, :, 2] += 1.0
    with torch.no_grad():
        stage1 = denoise(unet, latents, 500, context)
        assert torch.allclose(denoise(unet, changed, 500, context)[:, :, 0], stage1[:, :, 0])  # frames independent
        modules = add_motion_modules(unet, config)
        assert torch.allclose(denoise(unet, latents, 500, context), stage1, atol=1e-6)  # zero-initialised
        for m in modules:
            nn.init.normal_(m.temporal_transformer.proj_out.weight, std=0.1)
        mixed = denoise(unet, latents, 500, context)
        assert not torch.allclose(denoise(unet, changed, 500, context)[:, :, 0], mixed[:, :, 0], atol=1e-5)


def test_reference_attention_changes_output_only_through_the_bank(tiny):
    _, models = tiny
    attention, unet = models.reference_attention, models.denoising_unet.eval()
    models.reference_unet.eval()
    torch.manual_seed(3)
    latents, context = torch.randn(2, 4, 2, 8, 8), torch.randn(2, 1, 32)
    ref_a, ref_b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        attention.write(ref_a, context[:1])
        out_a = denoise(unet, latents, 300, context)
        attention.write(ref_b, context[:1])
        out_b = denoise(unet, latents, 300, context)
        attention.set_mask(torch.tensor([False, True]))  # classifier-free guidance: sample 0 unconditional
        masked = denoise(unet, latents, 300, context)
        attention.clear()  # no writer output: plain self-attention
        plain = denoise(unet, latents, 300, context)
        attention.write(ref_a, context[:1])
        attention.clear()
        plain_again = denoise(unet, latents, 300, context)
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    assert not torch.allclose(out_a, plain, atol=1e-4)
    assert torch.equal(plain, plain_again)
    assert torch.allclose(masked[0], plain[0], atol=1e-5) and torch.allclose(masked[1], out_b[1], atol=1e-5)


def test_schedulers_use_official_settings():
    config = Lmk2VideoConfig.official()
    train, infer = train_scheduler(config), inference_scheduler(config)
    assert train.config.beta_schedule == "scaled_linear" and infer.config.beta_schedule == "linear"
    for s in (train, infer):
        assert s.config.prediction_type == "v_prediction" and not s.config.clip_sample
        assert float(s.alphas_cumprod[-1]) < 1e-6  # zero terminal SNR
        s.set_timesteps(25)
        assert int(s.timesteps[0]) == 999 and len(s.timesteps) == 25


def test_context_windows_follow_the_official_schedule():
    assert context_windows(5) == [[0, 1, 2, 3, 4]]
    assert context_windows(16) == [list(range(16))]
    assert context_windows(20) == [list(range(16)), [12, 13, 14, 15, 16, 17, 18, 19, 0, 1, 2, 3, 4, 5, 6, 7]]
    windows = context_windows(45)
    assert [w[0] for w in windows] == [0, 12, 24, 36] and {i for w in windows for i in w} == set(range(45))


@pytest.fixture(scope="module")
def generator():
    return Lmk2Video.random_tiny(seed=0)


@pytest.mark.parametrize("frames", [1, 5, 20])
def test_generate_any_length(generator, frames):
    rng = np.random.default_rng(frames)
    reference = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)  # resized to the pose size
    poses = rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    video = generator.generate(reference, poses, steps=1, progress=False)
    assert video.shape == (frames, 64, 64, 3) and video.dtype == np.uint8
    assert video.std() > 0


def test_generate_depends_on_reference_and_seed(generator):
    rng = np.random.default_rng(7)
    poses = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    ref_a, ref_b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    first = generator.generate(ref_a, poses, steps=2, progress=False)
    assert np.array_equal(first, generator.generate(ref_a, poses, steps=2, progress=False))
    assert not np.array_equal(first, generator.generate(ref_b, poses, steps=2, progress=False))
    assert not np.array_equal(first, generator.generate(ref_a, poses, steps=2, seed=1, progress=False))


def test_from_pretrained_loads_official_layout(generator, tmp_path):
    m = generator.models
    torch.save(m.pose_guider.state_dict(), tmp_path / "pose_guider.pth")
    torch.save(m.reference_unet.state_dict(), tmp_path / "reference_unet.pth")
    unet_state = m.denoising_unet.state_dict()
    torch.save({k: v for k, v in unet_state.items() if "motion_module" not in k}, tmp_path / "denoising_unet.pth")
    torch.save({k: v for k, v in unet_state.items() if "motion_module" in k}, tmp_path / "motion_module.pth")
    m.vae.save_pretrained(tmp_path / "sd-vae-ft-mse")
    m.image_encoder.save_pretrained(tmp_path / "image_encoder")
    loaded = Lmk2Video.from_pretrained(tmp_path, config=generator.config)
    for name in ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider"):
        theirs, ours = getattr(m, name).state_dict(), getattr(loaded.models, name).state_dict()
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs), name
        module = getattr(loaded.models, name)
        assert not any(t.is_meta for t in [*module.parameters(), *module.buffers()]), name
    with pytest.raises(ValueError, match="missing weights: reference_unet"):
        Lmk2Video.from_pretrained({"vae": "x", "image_encoder": "y", "pose_guider": "p", "denoising_unet": "d"},
                                  config=generator.config)


def test_sd15_unet_initialises_both_unets(tiny, tmp_path):
    from diffusers import UNet2DConditionModel

    config, models = tiny
    torch.manual_seed(4)
    UNet2DConditionModel(**config.unet).save_pretrained(tmp_path / "unet")
    sd15 = UNet2DConditionModel.from_pretrained(tmp_path / "unet").state_dict()
    load_sd15_unets(models, tmp_path)
    denoising, reference = models.denoising_unet.state_dict(), models.reference_unet.state_dict()
    assert all(torch.equal(denoising[k], v) for k, v in sd15.items())
    assert set(sd15) - set(reference) == {"conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight", "conv_out.bias"}
    assert all(torch.equal(reference[k], sd15[k]) for k in reference)
