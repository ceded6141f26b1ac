"""PoseGuider: pose images -> five feature maps added to the denoising UNet (official layout).

The official module (``src/models/pose_guider.py``, ``PoseGuider(320, use_ca=True)``):

- ``conv_layers``: conv/BN/ReLU triplets 3->3->16->16->32->32->64->64->128, three of them
  stride 2 (4x4 kernels), so a 512 image becomes a 64x64 (latent-size) map;
- ``final_proj``: zero-initialised 1x1 conv 128->C, times a learned ``scale`` (init 2);
- ``conv_layers_1..4``: conv/BN/ReLU pairs to C@/2, 2C@/4, 4C@/8, 4C@/8, each followed by
  ``cross_attn1..4``, a Transformer2DModel (16 heads x 88, 1x1-conv projections) whose
  block has no cross-attention (``cross_attention_dim=None``), so it is self-attention
  only and the official reference-pose input has no effect on the output; it is not taken.

Outputs for C=320 and a 512x512 input: 320@64, 320@32, 640@16, 1280@8, 1280@8, added to the
UNet after ``conv_in`` and after down blocks 0..3 (:mod:`models.unets`).

BatchNorm: the official inference pipeline never calls ``.eval()`` on the PoseGuider, so its
BatchNorm layers normalise with the statistics of the frames in each context window, as in
training. :func:`batch_statistics` reproduces that without touching the running buffers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import Transformer2DModel
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class PoseGuider(ModelMixin, ConfigMixin):
    """Multi-scale pose encoder; state-dict keys equal the official ``pose_guider.pth``."""

    @register_to_config
    def __init__(self, channels: int = 320, attention_heads: int = 16, attention_head_dim: int = 88,
                 norm_num_groups: int = 32):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 2.0))
        stem = [(3, 3, 3, 1), (3, 16, 4, 2), (16, 16, 3, 1), (16, 32, 4, 2),
                (32, 32, 3, 1), (32, 64, 4, 2), (64, 64, 3, 1), (64, 128, 3, 1)]
        self.conv_layers = nn.Sequential(*[m for c_in, c_out, k, s in stem for m in _conv_bn_relu(c_in, c_out, k, s)])
        self.final_proj = nn.Conv2d(128, channels, kernel_size=1)
        widths = [channels, channels, 2 * channels, 4 * channels, 4 * channels]
        for i in range(1, 5):
            c_in, c_out = widths[i - 1], widths[i]
            layers = _conv_bn_relu(c_in, c_in) + (_conv_bn_relu(c_in, c_out, stride=2) if i < 4 else [])
            setattr(self, f"conv_layers_{i}", nn.Sequential(*layers))
        for i in range(1, 5):
            setattr(self, f"cross_attn{i}", Transformer2DModel(
                num_attention_heads=attention_heads, attention_head_dim=attention_head_dim,
                in_channels=widths[i], norm_num_groups=norm_num_groups))
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convs with zero bias, zero ``final_proj`` (official initialisation)."""
        for block in (self.conv_layers, self.conv_layers_1, self.conv_layers_2, self.conv_layers_3, self.conv_layers_4):
            for m in block:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.kernel_size[0] * m.kernel_size[1] * m.in_channels
                    nn.init.normal_(m.weight, mean=0.0, std=float(np.sqrt(2.0 / fan_in)))
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    def forward(self, pose: torch.Tensor) -> list[torch.Tensor]:
        """pose (N,3,H,W) (``pipelines.inference.lmk2video.pose_input``) -> [C@H/8, C@H/16, 2C@H/32, 4C@H/64, 4C@H/64], each (N,c,h,w)."""
        x = self.final_proj(self.conv_layers(pose)) * self.scale
        features = [x]
        for i in range(1, 5):
            x = getattr(self, f"conv_layers_{i}")(x)
            x = getattr(self, f"cross_attn{i}")(x, return_dict=False)[0]
            features.append(x)
        return features


@contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers use batch statistics and leave their running buffers as they are."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.train(True)
        m.track_running_stats = False  # torch then neither reads nor updates the running buffers
    try:
        yield
    finally:
        for m, (training, track) in zip(norms, saved):
            m.train(training)
            m.track_running_stats = track
