"""Audio2Pose: wav2vec2 features -> 6D head poses, an autoregressive transformer decoder.

Official architecture (``src/audio_models/pose_model.py``): audio ``in_fn`` Linear(hidden
-> 512), pose ``pose_map`` Linear(6 -> 512), sinusoidal positions ``PPE`` (max 600),
identity ``id_embed`` Embedding(100, 512) added to every step, a stock
``nn.TransformerDecoder`` (8 layers, 8 heads, ffn 1024) with an ALiBi-biased causal
self-attention mask, cross-attention where step t sees only audio frame t, and
``pose_map_r`` Linear(512 -> 6). Inference starts from a zero pose and feeds each output
back (:meth:`Audio2PoseModel.generate`), in chunks of 150 frames (5 s at 30 fps) whose
short remainder joins the previous chunk. Names follow the official ``audio2pose.pt``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from models.audio_checkpoint import (OFFICIAL_WAV2VEC2, TINY_WAV2VEC2, build_from_checkpoint, load_model_state,
                                     structure)

SAMPLE_RATE = 16_000


@dataclass
class Audio2PoseConfig:
    """Sizes of :class:`Audio2PoseModel`. ``wav2vec2`` None builds the head only (cached features)."""

    audio_dim: int = 768
    hidden: int = 512
    heads: int = 8
    layers: int = 8
    ffn: int = 1024
    num_ids: int = 100
    max_len: int = 600
    pose_dim: int = 6
    dropout: float = 0.1
    wav2vec2: dict | None = field(default_factory=lambda: dict(OFFICIAL_WAV2VEC2))

    @classmethod
    def official(cls) -> Audio2PoseConfig:
        """The official model: wav2vec2-base inside, d=512, 8 layers, 8 heads, ffn 1024."""
        return cls()

    @classmethod
    def tiny(cls, audio_dim: int = 32) -> Audio2PoseConfig:
        """A tiny model for tests with a tiny random wav2vec2 of hidden size ``audio_dim``."""
        return cls(audio_dim=audio_dim, hidden=32, heads=2, layers=2, ffn=64,
                   wav2vec2={**TINY_WAV2VEC2, "hidden_size": audio_dim})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Audio2PoseConfig:
        return cls(**values)


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi head slopes (Press et al.), as the official ``init_biased_mask``: 2^-1..2^-8 for 8 heads."""
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


def alibi_causal_mask(heads: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """Float self-attention mask (heads, L, L): ``slope_h * (j - i)`` for j <= i, ``-inf`` above."""
    idx = torch.arange(length, device=device)
    distance = (idx[None, :] - idx[:, None]).float()                     # j - i
    slopes = torch.tensor(alibi_slopes(heads), device=device)[:, None, None]
    return (slopes * distance).masked_fill(distance > 0, float("-inf"))


def own_frame_mask(length: int, frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool cross-attention mask (L, S), True = blocked: step t attends only to audio frame t."""
    return ~torch.eye(length, frames, dtype=torch.bool, device=device)


def chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunks of ``chunk`` frames; a shorter remainder joins the previous chunk.

    As the official inference (5 s chunks), without its failures: under one chunk gives one
    chunk, an exact multiple gives whole chunks.
    """
    if length < 1 or chunk < 1:
        raise ValueError(f"need a positive length and chunk, got {length} and {chunk}")
    starts = list(range(0, length, chunk))
    if len(starts) > 1 and length - starts[-1] < chunk:
        starts.pop()
    return [(start, end) for start, end in zip(starts, starts[1:] + [length])]


def shift_poses(poses: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing inputs (B, T, 6) of target poses (B, T, 6): a zero pose, then frames 0..T-2."""
    return torch.cat([torch.zeros_like(poses[:, :1]), poses[:, :-1]], dim=1)


class SinusoidalPositions(nn.Module):
    """Adds fixed sinusoidal positions (buffer ``pe`` (1, max_len, d), in the state dict)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).float()[:, None]
        freq = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the {self.pe.shape[1]} positions of the pose model")
        return x + self.pe[:, : x.shape[1]]


class Audio2PoseModel(nn.Module):
    """``head`` (teacher forcing) and ``generate`` (autoregressive) on cached features; ``infer`` on audio."""

    def __init__(self, config: Audio2PoseConfig) -> None:
        super().__init__()
        self.config = config
        self.register_module("audio_encoder", None)
        if config.wav2vec2 is not None:
            from models.wav2vec import AudioEncoder  # transformers: only when wav2vec2 is inside

            self.set_audio_encoder(AudioEncoder.from_config_dict(config.wav2vec2))
        self.pose_map = nn.Linear(config.pose_dim, config.hidden)
        self.in_fn = nn.Linear(config.audio_dim, config.hidden)
        self.PPE = SinusoidalPositions(config.hidden, config.max_len)
        layer = nn.TransformerDecoderLayer(d_model=config.hidden, nhead=config.heads, dim_feedforward=config.ffn,
                                           dropout=config.dropout, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=config.layers)
        self.pose_map_r = nn.Linear(config.hidden, config.pose_dim)
        self.id_embed = nn.Embedding(config.num_ids, config.hidden)

    def set_audio_encoder(self, encoder: nn.Module) -> None:
        """Put ``encoder`` inside the model (first in the state dict, as officially) and record its sizes."""
        if encoder.config.hidden_size != self.config.audio_dim:
            raise ValueError(f"wav2vec2 hidden size {encoder.config.hidden_size} != audio_dim {self.config.audio_dim}")
        self.audio_encoder = encoder
        self.config.wav2vec2 = structure(encoder.config)

    def _decode(self, pose_tokens: torch.Tensor, memory: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """Poses (B, L, 6) from embedded input poses (B, L, d), audio memory (B, S >= L, d), identity (B, 1, d)."""
        batch, length = pose_tokens.shape[:2]
        target = self.PPE(pose_tokens) + identity
        tgt_mask = alibi_causal_mask(self.config.heads, length, memory.device).repeat(batch, 1, 1)
        memory_mask = own_frame_mask(length, memory.shape[1], memory.device)
        out = self.transformer_decoder(target, memory, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.pose_map_r(out)

    def head(self, features: torch.Tensor, id_index: torch.Tensor, poses_in: torch.Tensor) -> torch.Tensor:
        """Poses (B, T, 6) by teacher forcing.

        ``features`` (B, T, audio_dim) wav2vec2 features, ``id_index`` (B,) identities in
        ``[0, num_ids)``, ``poses_in`` (B, T, 6) the decoder inputs: a zero pose then the
        target poses of frames 0..T-2 (:func:`shift_poses`).
        """
        identity = self.id_embed(id_index)[:, None]
        return self._decode(self.pose_map(poses_in), self.in_fn(features), identity)

    @torch.no_grad()
    def generate(self, features: torch.Tensor, id_index: torch.Tensor, chunk: int = 150) -> torch.Tensor:
        """Poses (B, T, 6), autoregressive from a zero pose in chunks of ``chunk`` frames (:func:`chunk_bounds`)."""
        memory = self.in_fn(features)
        identity = self.id_embed(id_index)[:, None]
        parts = [self._autoregressive(memory[:, start:end], identity) for start, end in
                 chunk_bounds(features.shape[1], chunk)]
        return torch.cat(parts, dim=1)

    def _autoregressive(self, memory: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """One chunk: each step's output pose is embedded and fed back as the next input."""
        tokens = self.pose_map(memory.new_zeros(memory.shape[0], 1, self.config.pose_dim))
        for step in range(memory.shape[1]):
            poses = self._decode(tokens, memory, identity)
            if step + 1 < memory.shape[1]:
                tokens = torch.cat([tokens, self.pose_map(poses[:, -1:])], dim=1)
        return poses

    @torch.no_grad()
    def infer(self, input_values: torch.Tensor, seq_len: int, id_index: torch.Tensor, *,
              chunk_seconds: float = 5.0, fps: float = 30.0) -> torch.Tensor:
        """Poses (B, seq_len, 6) of normalised 16 kHz audio (B, samples), as the official inference.

        The audio is cut into ``chunk_seconds`` pieces (the short remainder joins the last
        one); each piece gets its own wav2vec2 pass and its own autoregressive run.
        """
        if self.audio_encoder is None:
            raise RuntimeError("this Audio2Pose model has no wav2vec2 inside; run generate() on cached features "
                               "or attach one with set_audio_encoder()")
        frames_per_chunk = max(1, round(chunk_seconds * fps))
        samples_per_chunk = round(chunk_seconds * SAMPLE_RATE)
        bounds = chunk_bounds(seq_len, frames_per_chunk)
        identity = self.id_embed(id_index)[:, None]
        parts = []
        for index, (start, end) in enumerate(bounds):
            last = index == len(bounds) - 1
            audio = input_values[:, index * samples_per_chunk: None if last else (index + 1) * samples_per_chunk]
            memory = self.in_fn(self.audio_encoder(audio, end - start))
            parts.append(self._autoregressive(memory, identity))
        return torch.cat(parts, dim=1)


def from_checkpoint(checkpoint: str | Path | Mapping, *, strict: bool = True) -> Audio2PoseModel:
    """A model from our trainer checkpoint (its config inside) or an official ``audio2pose.pt``.

    ``checkpoint`` is a file or its loaded contents (see :func:`models.audio_checkpoint.split_checkpoint`).
    """
    return build_from_checkpoint(checkpoint, "audio2pose", Audio2PoseModel, Audio2PoseConfig, strict=strict)


def load_official(path: str | Path, config: Audio2PoseConfig | None = None, *, strict: bool = True) -> Audio2PoseModel:
    """The official ``audio2pose.pt`` (wav2vec2 inside) loaded into :class:`Audio2PoseModel`."""
    model = Audio2PoseModel(config or Audio2PoseConfig.official())
    load_model_state(model, torch.load(path, map_location="cpu", weights_only=True), strict=strict,
                     name=Path(path).name)
    return model.eval()
