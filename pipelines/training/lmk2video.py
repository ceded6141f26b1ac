"""Lmk2Video trainers: stage 1 (image: denoising UNet + ReferenceNet + PoseGuider) and stage 2
(video: the motion modules only), streaming from the build's shards.

The objective is the official one (``train_stage_1.py`` / ``train_stage_2.py``):

- latents: VAE ``latent_dist.sample()`` x 0.18215 of the target frame(s) and of the reference;
- noise with an offset (0.05 x one normal value per sample and channel), timesteps uniform
  over the 1000 training steps of the DDIM training scheduler (scaled_linear 0.00085..0.012,
  zero terminal SNR, v-prediction), target = velocity;
- loss: MSE per sample weighted by min-SNR (gamma 5) as the official code computes it for
  v-prediction: ``w = min(snr + 1, gamma) / (snr + 1)``;
- conditioning drop (10%): the sample's CLIP image embedding is zeroed and its reference
  attention is turned off, which is what classifier-free guidance's unconditional branch
  sees at inference. The official code drops per batch and zeroes the CLIP *input* pixels;
  here each sample is dropped on its own (the same with its batch size of 1 in stage 2) and
  the embedding itself is zeroed, as inference does;
- stage 1 trains the denoising UNet, the PoseGuider and the ReferenceNet except its
  ``up_blocks.3`` (frozen officially: its output is never used); the VAE and the CLIP image
  encoder are frozen. Stage 2 adds the motion modules to the denoising UNet and trains them
  alone; its frozen PoseGuider normalises with batch statistics without updating its buffers.
- AdamW (lr 1e-5, weight decay 1e-2), gradient norm clipped at 1.0, constant learning rate.

Every random draw of step ``s`` on rank ``r`` (noise, timesteps, drops, VAE samples) comes from
a generator seeded with ``(seed, r, s)`` and the data stream resumes at its exact position, so
a resumed run continues as the uninterrupted one would.

:class:`Lmk2VideoTrainer` is the trainer's part of :mod:`pipelines.training.loop`, which runs
the steps, resume, logs and checkpoints. Output folder: ``checkpoints/step-*.pt`` (layout:
:mod:`pipelines.training.checkpoint`, kind ``lmk2video-stage1``/``-stage2``), the model files
in the official layout (stage 1: ``pose_guider.pth``, ``reference_unet.pth``,
``denoising_unet.pth``; stage 2: ``motion_module.pth``), ``lmk2video_config.json`` (model
sizes), ``inference.json`` (the conventions the weights were trained with: ``{"pose_feed":
"unit"}``, pose images fed to the PoseGuider in [-1, 1], which inference then uses by default),
``config.json``, ``train.csv`` (step, epoch, mean loss over the ranks, lr, samples/s) and
TensorBoard events under ``tb/``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aniportrait.storage import write_local_atomic
from models.lmk2video import (Lmk2VideoConfig, Lmk2VideoModels, Lmk2VideoNet, add_motion_modules, build_models,
                              train_scheduler)
from models.official_weights import (OFFICIAL_FILES, load_image_encoder, load_into, load_lmk2video_weights,
                                     load_motion_state, load_motion_weights, load_sd15_unets, load_vae)
from pipelines.inference.conventions import CONVENTIONS_FILE, TRAINED_POSE_FEED, TRAINER_CONFIG_FILE
from pipelines.inference.lmk2video import clip_pixels, pose_input
from pipelines.training.checkpoint import local_or_hub, save_checkpoint
from pipelines.training.distributed import wrap_ddp
from pipelines.training.frames import members_for
from pipelines.training.lmk2video_samples import SampleSettings, Stage1Decoder, Stage2Decoder
from pipelines.training.loop import TrainResult, TrainTask, Worker, launch, run_loop
from pipelines.training.stream import ShardStream, StreamPosition, batches, expand_shards

MIXED_PRECISION = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODEL_SIZES = ("official", "tiny")
#: ReferenceNet parameters the official stage 1 keeps frozen (their output is never read).
FROZEN_REFERENCE_PREFIX = "up_blocks.3."


@dataclass
class Lmk2VideoTrainConfig:
    """Everything a Lmk2Video training run needs (plain values: it travels to Ray workers)."""

    stage: int
    shards: list[str]
    out: str
    model: str = "official"
    size: int = 512
    batch_size: int = 2
    steps: int = 1000
    lr: float = 1e-5
    weight_decay: float = 1e-2
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    noise_offset: float = 0.05
    snr_gamma: float = 5.0
    uncond_ratio: float = 0.1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    window_frames: int = 16
    per_clip: int = 1
    pose_source: str = "draw"
    shuffle_buffer: int = 64
    loader_workers: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: bool = False
    workers: int = 1
    use_gpu: bool = False
    #: torch intra-op threads per worker (None: torch's default; 1 is far faster on a busy CPU)
    threads: int | None = None
    progress: bool = True
    #: SD1.5 folder (or its ``unet/``): initial weights of both UNets (stage 1).
    base_unet: str | None = None
    #: VAE folder (sd-vae-ft-mse) and CLIP image encoder folder; required for the official model.
    vae: str | None = None
    image_encoder: str | None = None
    #: Folder with official-format files to start from: stage 1's output for stage 2, or
    #: released weights to fine-tune (``pose_guider.pth``, ``reference_unet.pth``, ``denoising_unet.pth``).
    init: str | None = None
    #: AnimateDiff motion weights (``mm_sd_v15_v2.ckpt`` or a MotionAdapter folder), stage 2.
    motion_module: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.model not in MODEL_SIZES:
            raise ValueError(f"model must be one of {', '.join(MODEL_SIZES)}, got {self.model!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.size % 64:
            raise ValueError(f"size must be a multiple of 64 (the PoseGuider's smallest map is size/64), got {self.size}")
        for name in ("batch_size", "steps", "checkpoint_every", "keep_checkpoints", "log_every", "window_frames",
                     "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.uncond_ratio <= 1.0:
            raise ValueError(f"uncond_ratio must be in [0, 1], got {self.uncond_ratio}")
        members_for(self.pose_source)  # type: ignore[arg-type]  (raises on an unknown source)
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lmk2VideoTrainConfig:
        return cls(**data)

    def model_config(self) -> Lmk2VideoConfig:
        return Lmk2VideoConfig.tiny() if self.model == "tiny" else Lmk2VideoConfig.official()


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights of the official v-prediction min-SNR: ``min(snr+1, gamma) / (snr+1)``."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps) + 1.0
    return snr.clamp(max=gamma) / snr


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of every random draw of one step on one rank."""
    state = int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def freeze_for_stage(models: Lmk2VideoModels, stage: int) -> list[nn.Parameter]:
    """Set ``requires_grad`` as the official stage does; returns the trainable parameters."""
    for module in (models.vae, models.image_encoder, models.reference_unet, models.denoising_unet, models.pose_guider):
        module.requires_grad_(False)
    if stage == 1:
        models.denoising_unet.requires_grad_(True)
        models.pose_guider.requires_grad_(True)
        for name, param in models.reference_unet.named_parameters():
            param.requires_grad_(not name.startswith(FROZEN_REFERENCE_PREFIX))
    else:
        for name, param in models.denoising_unet.named_parameters():
            param.requires_grad_(".motion_modules." in name)
    trainable = [p for m in (models.reference_unet, models.denoising_unet, models.pose_guider)
                 for p in m.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"stage {stage} has nothing to train (stage 2 needs motion modules)")
    return trainable


def motion_state(denoising_unet: nn.Module) -> dict[str, torch.Tensor]:
    """The motion-module tensors of a denoising UNet (the official ``motion_module.pth``)."""
    return {k: v for k, v in denoising_unet.state_dict().items() if ".motion_modules." in k}


def official_files(models: Lmk2VideoModels, stage: int) -> dict[str, dict[str, torch.Tensor]]:
    """State dicts to write under the official file names for what ``stage`` trains."""
    if stage == 2:
        return {OFFICIAL_FILES["motion_module"]: motion_state(models.denoising_unet)}
    denoising = {k: v for k, v in models.denoising_unet.state_dict().items() if ".motion_modules." not in k}
    return {OFFICIAL_FILES["pose_guider"]: models.pose_guider.state_dict(),
            OFFICIAL_FILES["reference_unet"]: models.reference_unet.state_dict(),
            OFFICIAL_FILES["denoising_unet"]: denoising}


class Lmk2VideoTrainer(TrainTask):
    """Models, optimizer and loss of one stage on one device (the DDP-wrapped net when several ranks).

    ``loss(batch, generator)`` is the official objective of one batch; ``train_step(batch, step)``
    draws with the generator of ``step``, back-propagates and updates. As the trainer's part of
    :func:`~pipelines.training.loop.run_loop` its checkpoint ``models`` are the official files'
    state dicts (stage 2: the motion modules only) and its ``extra`` the fp16 loss scaler.
    """

    unit = "samples"
    divergence_hint = "lower --lr, or use bf16 rather than fp16"

    def __init__(self, config: Lmk2VideoTrainConfig, models: Lmk2VideoModels, device: torch.device, rank: int = 0):
        self.config, self.models, self.device, self.rank = config, models, device, rank
        self.kind = f"lmk2video-stage{config.stage}"
        self.lmk2video_config = config.model_config()
        self.model_config = self.lmk2video_config.to_dict()
        self.inference = {"pose_feed": TRAINED_POSE_FEED}
        self.autocast_dtype = MIXED_PRECISION[config.mixed_precision]
        if self.autocast_dtype == torch.float16 and device.type != "cuda":
            raise ValueError("fp16 mixed precision needs a GPU (use bf16 on CPU)")
        self.scheduler = train_scheduler(self.lmk2video_config)
        self.trainable = freeze_for_stage(models, config.stage)
        # Frozen modules run in the mixed-precision dtype (stage 2: also the ReferenceNet and the
        # PoseGuider; the denoising UNet holds the trained motion modules and stays fp32).
        frozen = [models.vae, models.image_encoder] + ([models.reference_unet, models.pose_guider]
                                                      if config.stage == 2 else [])
        for module in frozen:
            module.to(device)
            if self.autocast_dtype is not None:
                module.to(self.autocast_dtype)
        models.vae.eval()
        models.image_encoder.eval()
        if config.gradient_checkpointing:
            models.reference_unet.enable_gradient_checkpointing()
            models.denoising_unet.enable_gradient_checkpointing()
        # Stage 1 needs find_unused_parameters (as the official run): a rank whose whole batch drops
        # the reference leaves the ReferenceNet without gradients for that step.
        self.net = wrap_ddp(Lmk2VideoNet(models, config.stage).train(), device,
                            find_unused_parameters=config.stage == 1)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, betas=config.adam_betas,
                                           eps=config.adam_eps, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None

    @classmethod
    def for_worker(cls, config: Lmk2VideoTrainConfig, worker: Worker) -> Lmk2VideoTrainer:
        """The trainer of ``config``'s stage on a rank of the loop, its models built with their starting weights."""
        return cls(config, build_stage_models(config), worker.device, worker.rank)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    @torch.no_grad()
    def _latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        vae = self.models.vae
        dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
        return dist.sample(generator=generator).float() * self.lmk2video_config.vae_scaling

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """The min-SNR weighted v-prediction loss of one batch (items of the stage's decoder).

        The reference-attention bank it fills stays for the backward pass; clear it after
        (``models.reference_attention.clear()``), as :meth:`train_step` does."""
        c = self.config
        if c.stage == 1:
            frames, poses = batch["target"][:, None], batch["pose"][:, None]
        else:
            frames, poses = batch["frames"], batch["poses"]
        b, f = frames.shape[:2]
        pixels = to_unit_range(frames.flatten(0, 1).to(self.device))
        latents = self._latents(pixels, generator)
        latents = latents.reshape(b, f, *latents.shape[1:]).transpose(1, 2)  # (B,4,F,h,w)
        reference = to_unit_range(batch["reference"].to(self.device))
        reference_latents = self._latents(reference, generator)
        with torch.no_grad():
            encoder = self.models.image_encoder
            clip = clip_pixels(batch["reference"].permute(0, 2, 3, 1).cpu().numpy(),
                               encoder.config.image_size).to(self.device, encoder.dtype)
            context = encoder(clip).image_embeds.float()[:, None]
        keep = torch.rand(b, generator=generator, device=self.device) >= c.uncond_ratio
        context = context * keep[:, None, None]
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        if c.noise_offset > 0:
            noise = noise + c.noise_offset * torch.randn((b, latents.shape[1], 1, 1, 1), generator=generator,
                                                         device=self.device)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator,
                                  device=self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = self.scheduler.get_velocity(latents, noise, timesteps)
        pose = pose_input(poses.flatten(0, 1).to(self.device), TRAINED_POSE_FEED)
        with self._autocast():
            prediction = self.net(noisy, timesteps, reference_latents, context, pose, keep)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3, 4))
        if c.snr_gamma > 0:
            per_sample = per_sample * min_snr_weights(self.scheduler, timesteps, c.snr_gamma)
        return per_sample.mean()

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> float:
        """One optimisation step on ``batch`` with the draws of step ``step``; returns its loss."""
        generator = step_generator(self.config.seed, self.rank, step, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss = self.loss(batch, generator)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
        finally:
            self.models.reference_attention.clear()
        torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return float(loss.detach())

    def items_in(self, batch: dict[str, torch.Tensor]) -> int:
        return len(batch["reference"])

    def model_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trained modules' state dicts by official file name (stage 2: the motion modules only)."""
        m = self.models
        if self.config.stage == 2:
            return {"motion_module": motion_state(m.denoising_unet)}
        return {"pose_guider": m.pose_guider.state_dict(), "reference_unet": m.reference_unet.state_dict(),
                "denoising_unet": m.denoising_unet.state_dict()}

    def load_model_states(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        m = self.models
        if self.config.stage == 2:
            load_motion_state(m.denoising_unet, states["motion_module"], "checkpoint motion modules")
        else:
            for name in ("pose_guider", "reference_unet", "denoising_unet"):
                load_into(getattr(m, name), states[name], f"checkpoint {name}")

    def extra_state(self) -> dict[str, Any]:
        return {"scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        if self.scaler is not None and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])

    def open_stream(self, worker: Worker, position: StreamPosition) -> EpochStream:
        return EpochStream(self.config, worker.rank, worker.world, position, batch_size=self.config.batch_size)

    def write_outputs(self, out: Path) -> None:
        """The trained modules in the official files, the model sizes (``lmk2video_config.json``)
        and the conventions inference follows with them (``inference.json``)."""
        for name, weights in official_files(self.models, self.config.stage).items():
            save_checkpoint(out / name, weights)
        write_local_atomic(out / TRAINER_CONFIG_FILE, json.dumps(self.model_config, indent=1).encode())
        write_local_atomic(out / CONVENTIONS_FILE, json.dumps(self.inference, indent=1).encode())


def build_stage_models(config: Lmk2VideoTrainConfig) -> Lmk2VideoModels:
    """The models of ``config``'s stage, with their starting weights (random for the tiny model)."""
    mcfg = config.model_config()
    if config.model == "official" and (config.vae is None or config.image_encoder is None):
        raise ValueError("the official model needs the pretrained VAE and CLIP image encoder: give --vae and "
                         "--image-encoder (folders of sd-vae-ft-mse and sd-image-variations' image_encoder)")
    if config.stage == 2 and config.init is None and config.model == "official":
        raise ValueError("stage 2 starts from stage 1's weights: give --init with the stage-1 output folder")
    if config.stage == 1 and config.model == "official" and config.base_unet is None and config.init is None:
        raise ValueError("stage 1 needs starting UNet weights: give --base-unet (SD1.5) or --init (official files)")
    vae = load_vae(config.vae) if config.vae else None
    image_encoder = load_image_encoder(config.image_encoder) if config.image_encoder else None
    models = build_models(mcfg, vae=vae, image_encoder=image_encoder)
    if config.base_unet:
        load_sd15_unets(models, config.base_unet)
    if config.init:
        folder = Path(config.init)
        names = ("pose_guider", "reference_unet", "denoising_unet")
        weights = {k: folder / OFFICIAL_FILES[k] for k in names}
        absent = [str(p) for p in weights.values() if not p.is_file()]
        if absent:
            raise FileNotFoundError(f"--init {folder} lacks {', '.join(absent)}")
        load_lmk2video_weights(models, weights)
    if config.stage == 2:
        add_motion_modules(models.denoising_unet, mcfg)
        if config.motion_module:
            load_motion_state(models.denoising_unet, load_motion_weights(config.motion_module), "motion_module")
    return models


def stage_decoder(config: Lmk2VideoTrainConfig, epoch: int = 0) -> Stage1Decoder | Stage2Decoder:
    """The shard-sample decoder of ``config``'s stage for ``epoch``."""
    settings = SampleSettings(config.size, config.size, seed=config.seed, per_clip=config.per_clip,
                              pose_source=config.pose_source, epoch=epoch)  # type: ignore[arg-type]
    return Stage1Decoder(settings) if config.stage == 1 else Stage2Decoder(settings, frames=config.window_frames)


class EpochStream:
    """Training items of one rank, epoch after epoch, each epoch a :class:`ShardStream` whose
    decoder draws with that epoch's seed (new frames and windows every epoch). ``position``
    is where it is, to save and to resume from. With ``batch_size`` it yields batches of
    consecutive items (``default_collate``, across epoch ends), ``position`` after the last."""

    def __init__(self, config: Lmk2VideoTrainConfig, rank: int = 0, world: int = 1,
                 position: StreamPosition | None = None, *, batch_size: int | None = None):
        self.config, self.rank, self.world = config, rank, world
        self.shards = expand_shards(config.shards)
        self.position = position or StreamPosition()
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        items = self._items()
        return items if self.batch_size is None else batches(items, self.batch_size)

    def _items(self) -> Iterator[dict[str, Any]]:
        c = self.config
        while True:
            epoch = self.position.epoch
            decoder = stage_decoder(c, epoch)
            stream = ShardStream(self.shards, decoder, seed=c.seed, shuffle_buffer=c.shuffle_buffer, rank=self.rank,
                                 world_size=self.world, position=self.position, epochs=epoch + 1,
                                 num_workers=c.loader_workers, members=decoder.settings.members)
            for item in stream:
                self.position = stream.position
                yield item
            self.position = StreamPosition(epoch + 1, 0)


def train_loop(config: dict[str, Any]) -> None:
    """One rank of a Lmk2Video run (what :func:`~pipelines.training.distributed.run_training` runs on every worker)."""
    run_loop(Lmk2VideoTrainConfig.from_dict(config), Lmk2VideoTrainer.for_worker)


def train(config: Lmk2VideoTrainConfig, *, ray_address: str | None = None) -> TrainResult:
    """Run ``config`` (here, or on ``config.workers`` Ray Train workers); returns what it left in ``config.out``."""
    weights = {name: local_or_hub(getattr(config, name))
               for name in ("vae", "image_encoder", "base_unet", "init", "motion_module")}
    config = dataclasses.replace(config, shards=expand_shards(config.shards), out=str(Path(config.out).resolve()),
                                 **weights)
    return launch(train_loop, config, name=f"lmk2video-stage{config.stage}", ray_address=ray_address)
