"""Lmk2Video model set (stage 1 + stage 2): sizes, builders, the training net and the DDIM schedulers.

``build_models(config)`` returns the five modules with reference attention already wired;
``add_motion_modules(models.denoising_unet, config)`` turns the denoising UNet into the stage-2
video UNet; :class:`Lmk2VideoNet` joins the trained modules into one forward for the trainer.
Official checkpoints load through :mod:`models.official_weights`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from models.pose_guider import PoseGuider, batch_statistics
from models.reference_attention import ReferenceAttention
from models.unets import MotionModule, build_denoising_unet, build_reference_unet, denoise
from models.unets import add_motion_modules as _attach_motion_modules

#: SD1.5 ``unet/config.json`` values that differ from diffusers' defaults or matter here.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32)
#: sd-vae-ft-mse ``config.json``.
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              layers_per_block=2, norm_num_groups=32, sample_size=256,
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
#: sd-image-variations-diffusers ``image_encoder`` (CLIP ViT-L/14 vision tower, 768-d projection).
CLIP_VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")


@dataclass
class Lmk2VideoConfig:
    """Sizes of every Lmk2Video module plus the diffusion settings (official values by default)."""

    unet: dict = field(default_factory=lambda: dict(SD15_UNET))
    vae: dict = field(default_factory=lambda: dict(SD_VAE))
    image_encoder: dict = field(default_factory=lambda: dict(CLIP_VIT_L14))
    pose_guider: dict = field(default_factory=lambda: dict(channels=320, attention_heads=16, attention_head_dim=88,
                                                           norm_num_groups=32))
    motion_heads: int = 8
    motion_max_frames: int = 32
    vae_scaling: float = 0.18215
    beta_start: float = 0.00085
    beta_end: float = 0.012
    train_beta_schedule: str = "scaled_linear"
    #: The released ``inference_v2.yaml`` samples with "linear" betas although training used
    #: "scaled_linear" (both rescaled to zero terminal SNR); "linear" reproduces official outputs.
    inference_beta_schedule: str = "linear"

    @classmethod
    def official(cls) -> Lmk2VideoConfig:
        """SD1.5 UNets, sd-vae-ft-mse, CLIP ViT-L/14 image encoder, PoseGuider(320), mm_sd_v15_v2."""
        return cls()

    @classmethod
    def tiny(cls) -> Lmk2VideoConfig:
        """CPU-sized random models with the official structure (64x64 frames -> 8x8 latents)."""
        return cls(
            unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128, 128),
                      layers_per_block=1, attention_head_dim=2, cross_attention_dim=32, norm_num_groups=32),
            vae=dict(SD_VAE, block_out_channels=(16, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                     sample_size=64),
            image_encoder=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=16, projection_dim=32, hidden_act="quick_gelu"),
            pose_guider=dict(channels=32, attention_heads=2, attention_head_dim=8, norm_num_groups=8),
            motion_heads=2,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Lmk2VideoConfig:
        return cls(**data)


@dataclass
class Lmk2VideoModels:
    """The five modules; ``reference_attention`` joins the ReferenceNet into the denoising UNet."""

    vae: nn.Module
    image_encoder: nn.Module
    reference_unet: nn.Module
    denoising_unet: nn.Module
    pose_guider: PoseGuider
    reference_attention: ReferenceAttention


def build_models(config: Lmk2VideoConfig, *, vae: nn.Module | None = None,
                 image_encoder: nn.Module | None = None) -> Lmk2VideoModels:
    """Randomly initialised modules of ``config`` (pass a loaded ``vae``/``image_encoder`` to reuse them).

    Build under ``with torch.device("meta"):`` to get shapes only. The denoising UNet has no
    motion modules yet (stage 1); see :func:`add_motion_modules`.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    reference_unet = build_reference_unet(config.unet)
    denoising_unet = build_denoising_unet(config.unet)
    return Lmk2VideoModels(
        vae=vae if vae is not None else AutoencoderKL(**config.vae, scaling_factor=config.vae_scaling),
        image_encoder=image_encoder if image_encoder is not None
        else CLIPVisionModelWithProjection(CLIPVisionConfig(**config.image_encoder)),
        reference_unet=reference_unet,
        denoising_unet=denoising_unet,
        pose_guider=PoseGuider(**config.pose_guider),
        reference_attention=ReferenceAttention(reference_unet, denoising_unet),
    )


class Lmk2VideoNet(nn.Module):
    """The trained modules as one ``nn.Module`` (one DDP wrapper): PoseGuider -> ReferenceNet
    (reference attention) -> denoising UNet.

    A plain ``nn.Module``, not a ``ModelMixin``: it owns no weights of its own and has no
    config to rebuild it from, it only composes modules built (and saved) on their own.
    Stage 2 keeps the PoseGuider and the ReferenceNet frozen: the PoseGuider normalises with
    batch statistics without updating its buffers, the ReferenceNet runs without gradients.
    """

    def __init__(self, models: Lmk2VideoModels, stage: int) -> None:
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.reference_unet = models.reference_unet
        self.denoising_unet = models.denoising_unet
        self.pose_guider = models.pose_guider
        self.reference_attention = models.reference_attention
        self.stage = stage

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, reference_latents: torch.Tensor,
                context: torch.Tensor, pose: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """noisy (B,4,F,h,w), timesteps (B,), reference_latents (B,4,h,w), context (B,1,D) (zero
        where dropped), pose (B*F,3,H,W) in [-1,1], keep (B,) bool -> prediction (B,4,F,h,w)."""
        if self.stage == 1:
            features = self.pose_guider(pose)
        else:
            with torch.no_grad(), batch_statistics(self.pose_guider):
                features = self.pose_guider(pose)
        attention = self.reference_attention
        if bool(keep.any()):
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.stage == 1):
                attention.write(reference_latents, context)
            attention.set_mask(None if bool(keep.all()) else keep)
        else:
            attention.clear()
        # The bank stays until the caller clears it: gradient checkpointing reads it again in backward.
        return denoise(self.denoising_unet, noisy, timesteps, context, features)


def add_motion_modules(denoising_unet: nn.Module, config: Lmk2VideoConfig) -> list[MotionModule]:
    """Stage 2: attach zero-initialised motion modules (official ``motion_modules.j`` names); returns them."""
    return _attach_motion_modules(denoising_unet, heads=config.motion_heads, max_frames=config.motion_max_frames)


def _ddim(config: Lmk2VideoConfig, beta_schedule: str):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=config.beta_start, beta_end=config.beta_end,
                         beta_schedule=beta_schedule, clip_sample=False, steps_offset=1,
                         rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")


def train_scheduler(config: Lmk2VideoConfig):
    """DDIM for training (noise, v targets, SNR): scaled_linear 0.00085..0.012, zero SNR, trailing, v-prediction."""
    return _ddim(config, config.train_beta_schedule)


def inference_scheduler(config: Lmk2VideoConfig):
    """DDIM for sampling: as training but ``config.inference_beta_schedule`` (official: "linear")."""
    return _ddim(config, config.inference_beta_schedule)
