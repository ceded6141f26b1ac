"""Audio2Mesh: wav2vec2 features -> per-frame offsets of the 468-vertex canonical face mesh.

Official architecture (``src/audio_models/model.py``): ``in_fn`` Linear(hidden -> 512),
``out_fn`` Linear(512 -> 1404), no activation, ``out_fn`` zero-initialised. The output is
an OFFSET added to the reference face's ``lmks3d``. Parameter names follow the official
``audio2mesh.pt`` so it loads strictly (:meth:`Audio2MeshModel.load_official`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from models.wav2vec import OFFICIAL_WAV2VEC2, TINY_WAV2VEC2, AudioHeadMixin


class Audio2MeshModel(ModelMixin, ConfigMixin, AudioHeadMixin):
    """``head(features)`` on cached wav2vec2 features, ``forward(input_values, seq_len)`` on audio.

    Config: ``audio_dim`` (wav2vec2 width), ``hidden``, ``num_vertices``, ``wav2vec2`` (the
    ``Wav2Vec2Config`` values of the encoder inside, or None for the head only).
    """

    @register_to_config
    def __init__(self, audio_dim: int = 768, hidden: int = 512, num_vertices: int = 468,
                 wav2vec2: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._init_audio_encoder(wav2vec2)
        self.in_fn = nn.Linear(audio_dim, hidden)
        self.out_fn = nn.Linear(hidden, num_vertices * 3)
        nn.init.zeros_(self.out_fn.weight)
        nn.init.zeros_(self.out_fn.bias)

    @classmethod
    def official_config(cls) -> dict[str, Any]:
        """The official model: wav2vec2-base inside, 768 -> 512 -> 1404."""
        return {"audio_dim": 768, "hidden": 512, "num_vertices": 468, "wav2vec2": dict(OFFICIAL_WAV2VEC2)}

    @classmethod
    def tiny_config(cls, audio_dim: int = 32) -> dict[str, Any]:
        """A tiny model for tests with a tiny random wav2vec2 of hidden size ``audio_dim``."""
        return {**cls.official_config(), "audio_dim": audio_dim, "hidden": 32,
                "wav2vec2": {**TINY_WAV2VEC2, "hidden_size": audio_dim}}

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Mesh offsets (B, T, num_vertices, 3) of wav2vec2 features (B, T, audio_dim)."""
        out = self.out_fn(self.in_fn(features))
        return out.view(*features.shape[:-1], self.config.num_vertices, 3)

    def forward(self, input_values: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Mesh offsets (B, seq_len, num_vertices, 3) of normalised 16 kHz audio (B, samples)."""
        if self.audio_encoder is None:
            raise RuntimeError("this Audio2Mesh model has no wav2vec2 inside; run head() on cached features "
                               "or attach one with set_audio_encoder()")
        return self.head(self.audio_encoder(input_values, seq_len))
