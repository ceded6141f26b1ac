"""ReferenceNet, denoising UNet and AnimateDiff motion modules on diffusers' UNet2DConditionModel.

- ReferenceNet: a stock ``UNet2DConditionModel`` without ``conv_norm_out``/``conv_out`` (as the
  official 2D UNet, whose output is never used: only its self-attention inputs are, see
  :mod:`models.reference_attention`). ``conv_out`` becomes a parameter-free identity.
- Denoising UNet: a stock ``UNet2DConditionModel`` (keys equal SD1.5 and ``denoising_unet.pth``)
  run on frames ``(B*F, C, h, w)``. Forward hooks add the PoseGuider maps after ``conv_in`` and
  after down blocks 0..3 (to the hidden state only, not to the skip connections, as the
  official 3D UNet) and run the motion modules.
- Motion modules (stage 2, ``mm_sd_v15_v2`` layout of ``inference_v2.yaml``; a ``ModelMixin`` each,
  built of plain ``nn.Module`` blocks as diffusers' own models are): one after each
  attention (or resnet, in blocks without attention) of every down/up block and after the mid
  attention, stored as ``<block>.motion_modules.<j>.temporal_transformer...`` so that
  ``motion_module.pth`` loads strictly. Their GroupNorm is per frame, as the official code
  (diffusers' ``AnimateDiffTransformer3D`` normalises over all frames at once, so it is not used).

Call the denoising UNet through :func:`denoise`, which reshapes ``(B,C,F,h,w)`` videos to frames
and hands the pose maps and the frame count to the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class _VideoState:
    """What the hooks of one denoising UNet read during a call of :func:`denoise`."""

    frames: int = 1
    pose: list[torch.Tensor] | None = None


def build_reference_unet(unet_kwargs: dict) -> UNet2DConditionModel:
    """ReferenceNet: keys equal the official ``reference_unet.pth`` (no ``conv_norm_out``/``conv_out``)."""
    unet = UNet2DConditionModel(**unet_kwargs)
    unet.conv_norm_out = None
    unet.conv_out = nn.Identity()
    return unet


def build_denoising_unet(unet_kwargs: dict) -> UNet2DConditionModel:
    """Denoising UNet with the PoseGuider hooks installed (stage 1; see :func:`add_motion_modules`)."""
    unet = UNet2DConditionModel(**unet_kwargs)
    state = _VideoState()
    unet._video_state = state

    def add_pose(index: int):
        def hook(module: nn.Module, args: tuple, output):
            if state.pose is None:
                return output
            if isinstance(output, tuple):  # down block: (hidden, skips); skips stay as they are
                return (output[0] + state.pose[index], *output[1:])
            return output + state.pose[index]
        return hook

    unet.conv_in.register_forward_hook(add_pose(0))
    for i, block in enumerate(unet.down_blocks):
        block.register_forward_hook(add_pose(i + 1))
    return unet


def denoise(unet: UNet2DConditionModel, latents: torch.Tensor, timestep: torch.Tensor | int,
            encoder_hidden_states: torch.Tensor, pose_features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Run the denoising UNet on a video.

    latents (B,C,F,h,w); timestep scalar or (B,); encoder_hidden_states (B,L,D);
    pose_features: the PoseGuider maps of the B*F frames, sample-major ((b f) order), or None.
    Returns the prediction (B,C,F,h,w). Reference attention, when written, is read inside.
    """
    b, c, f, h, w = latents.shape
    frames = latents.transpose(1, 2).reshape(b * f, c, h, w)
    if isinstance(timestep, torch.Tensor) and timestep.ndim == 1 and timestep.numel() == b:
        timestep = timestep.repeat_interleave(f)
    state: _VideoState = unet._video_state
    state.frames, state.pose = f, pose_features
    try:
        out = unet(frames, timestep, encoder_hidden_states=encoder_hidden_states.repeat_interleave(f, 0),
                   return_dict=False)[0]
    finally:
        state.pose = None
    return out.reshape(b, f, -1, h, w).transpose(1, 2)


class TemporalTransformerBlock(nn.Module):
    """Two temporal self-attentions (with sinusoidal positions) and a GEGLU feed-forward, pre-norm."""

    def __init__(self, dim: int, heads: int, max_frames: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList()
        for _ in range(2):
            attention = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
            attention.pos_encoder = SinusoidalPositionalEmbedding(dim, max_seq_length=max_frames)
            self.attention_blocks.append(attention)
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B*h*w, F, C) -> same shape; attention runs along F."""
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(attention.pos_encoder(norm(x))) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """Per-frame GroupNorm, Linear in, temporal blocks, Linear out, residual."""

    def __init__(self, channels: int, heads: int, max_frames: int, norm_num_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_frames)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*F, C, h, w), frames F -> same shape."""
        bf, c, h, w = x.shape
        y = self.norm(x).reshape(bf // frames, frames, c, h * w).permute(0, 3, 1, 2).reshape(-1, frames, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y)
        y = y.reshape(bf // frames, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return y + x


class MotionModule(ModelMixin, ConfigMixin):
    """AnimateDiff "Vanilla" motion module; ``proj_out`` starts at zero, so it starts as the identity."""

    @register_to_config
    def __init__(self, channels: int, heads: int = 8, max_frames: int = 32, norm_num_groups: int = 32):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_frames, norm_num_groups)
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B*F, C, h, w) -> same shape."""
        return self.temporal_transformer(x, frames)


def add_motion_modules(unet: UNet2DConditionModel, heads: int = 8, max_frames: int = 32) -> list[MotionModule]:
    """Attach motion modules to a denoising UNet built by :func:`build_denoising_unet`; returns them.

    Placement as the official 3D blocks: after attention j (or resnet j in blocks without
    attention) of every down and up block, and after the mid block's attention.
    """
    state: _VideoState = unet._video_state
    groups = unet.config.norm_num_groups
    added: list[MotionModule] = []

    def run(module: MotionModule):
        def hook(_: nn.Module, args: tuple, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if torch.is_grad_enabled() and unet.is_gradient_checkpointing:
                hidden = checkpoint(module, hidden, state.frames, use_reentrant=False)
            else:
                hidden = module(hidden, state.frames)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        targets = list(getattr(block, "attentions", None) or block.resnets)
        channels = [block.resnets[-1].out_channels] * len(targets)
        block.motion_modules = nn.ModuleList(
            [MotionModule(channels=c, heads=heads, max_frames=max_frames, norm_num_groups=groups)
             for c in channels]).to(unet.device, unet.dtype)
        for target, module in zip(targets, block.motion_modules):
            target.register_forward_hook(run(module))
            added.append(module)
    return added
