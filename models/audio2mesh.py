"""Audio2Mesh: wav2vec2 features -> per-frame offsets of the 468-vertex canonical face mesh.

Official architecture (``src/audio_models/model.py``): ``in_fn`` Linear(hidden -> 512),
``out_fn`` Linear(512 -> 1404), no activation, ``out_fn`` zero-initialised. The output is
an OFFSET added to the reference face's ``lmks3d``. Parameter names follow the official
``audio2mesh.pt`` so it loads strictly (:func:`load_official`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.audio_checkpoint import (OFFICIAL_WAV2VEC2, TINY_WAV2VEC2, build_from_checkpoint, load_model_state,
                                     structure)


@dataclass
class Audio2MeshConfig:
    """Sizes of :class:`Audio2MeshModel`. ``wav2vec2`` None builds the head only (cached features)."""

    audio_dim: int = 768
    hidden: int = 512
    num_vertices: int = 468
    wav2vec2: dict | None = field(default_factory=lambda: dict(OFFICIAL_WAV2VEC2))

    @classmethod
    def official(cls) -> Audio2MeshConfig:
        """The official model: wav2vec2-base inside, 768 -> 512 -> 1404."""
        return cls()

    @classmethod
    def tiny(cls, audio_dim: int = 32) -> Audio2MeshConfig:
        """A tiny model for tests with a tiny random wav2vec2 of hidden size ``audio_dim``."""
        return cls(audio_dim=audio_dim, hidden=32, wav2vec2={**TINY_WAV2VEC2, "hidden_size": audio_dim})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Audio2MeshConfig:
        return cls(**values)


class Audio2MeshModel(nn.Module):
    """``head(features)`` on cached wav2vec2 features, ``forward(input_values, seq_len)`` on audio."""

    def __init__(self, config: Audio2MeshConfig) -> None:
        super().__init__()
        self.config = config
        self.register_module("audio_encoder", None)
        if config.wav2vec2 is not None:
            from models.wav2vec import AudioEncoder  # transformers: only when wav2vec2 is inside

            self.set_audio_encoder(AudioEncoder.from_config_dict(config.wav2vec2))
        self.in_fn = nn.Linear(config.audio_dim, config.hidden)
        self.out_fn = nn.Linear(config.hidden, config.num_vertices * 3)
        nn.init.zeros_(self.out_fn.weight)
        nn.init.zeros_(self.out_fn.bias)

    def set_audio_encoder(self, encoder: nn.Module) -> None:
        """Put ``encoder`` inside the model (first in the state dict, as officially) and record its sizes."""
        if encoder.config.hidden_size != self.config.audio_dim:
            raise ValueError(f"wav2vec2 hidden size {encoder.config.hidden_size} != audio_dim {self.config.audio_dim}")
        self.audio_encoder = encoder
        self.config.wav2vec2 = structure(encoder.config)

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


def from_checkpoint(checkpoint: str | Path | Mapping, *, strict: bool = True) -> Audio2MeshModel:
    """A model from our trainer checkpoint (its config inside) or an official ``audio2mesh.pt``.

    ``checkpoint`` is a file or its loaded contents (see :func:`models.audio_checkpoint.split_checkpoint`).
    """
    return build_from_checkpoint(checkpoint, "audio2mesh", Audio2MeshModel, Audio2MeshConfig, strict=strict)


def load_official(path: str | Path, config: Audio2MeshConfig | None = None, *, strict: bool = True) -> Audio2MeshModel:
    """The official ``audio2mesh.pt`` (wav2vec2 inside) loaded into :class:`Audio2MeshModel`.

    ``strict`` (default) fails with the differing keys named; the official script itself
    loads with ``strict=False``.
    """
    model = Audio2MeshModel(config or Audio2MeshConfig.official())
    load_model_state(model, torch.load(path, map_location="cpu", weights_only=True), strict=strict,
                     name=Path(path).name)
    return model.eval()

