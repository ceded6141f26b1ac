"""Audio2Pose: wav2vec2 features -> 6D head poses, an autoregressive transformer decoder.

Official architecture (``src/audio_models/pose_model.py``): audio ``in_fn`` Linear(hidden
-> 512), pose ``pose_map`` Linear(6 -> 512), sinusoidal positions ``PPE`` (max 600),
identity ``id_embed`` Embedding(100, 512) added to every step, a stock
``nn.TransformerDecoder`` (8 layers, 8 heads, ffn 1024) with an ALiBi-biased causal
self-attention mask, cross-attention where step t sees only audio frame t, and
``pose_map_r`` Linear(512 -> 6). Inference starts from a zero pose and feeds each output
back (:meth:`Audio2PoseModel.generate`), in chunks of 150 frames (5 s at 30 fps) whose
short remainder joins the previous chunk. Names follow the official ``audio2pose.pt``.

Inference then scales and smooths the raw poses as the checkpoint's convention says
(``pipelines.inference.conventions.PosePostprocess``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from models.wav2vec import OFFICIAL_WAV2VEC2, TINY_WAV2VEC2, AudioHeadMixin


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


class Audio2PoseModel(ModelMixin, ConfigMixin, AudioHeadMixin):
    """``head`` (teacher forcing) and ``generate`` (autoregressive) on cached features; ``infer`` on audio.

    Config: ``audio_dim`` (wav2vec2 width), ``hidden``, ``heads``, ``layers``, ``ffn``, ``num_ids``
    (identity embeddings), ``max_len`` (positions), ``pose_dim``, ``dropout``, ``wav2vec2`` (the
    ``Wav2Vec2Config`` values of the encoder inside, or None for the head only).
    """

    @register_to_config
    def __init__(self, audio_dim: int = 768, hidden: int = 512, heads: int = 8, layers: int = 8, ffn: int = 1024,
                 num_ids: int = 100, max_len: int = 600, pose_dim: int = 6, dropout: float = 0.1,
                 wav2vec2: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._init_audio_encoder(wav2vec2)
        self.pose_map = nn.Linear(pose_dim, hidden)
        self.in_fn = nn.Linear(audio_dim, hidden)
        self.PPE = SinusoidalPositions(hidden, max_len)
        layer = nn.TransformerDecoderLayer(d_model=hidden, nhead=heads, dim_feedforward=ffn, dropout=dropout,
                                           batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=layers)
        self.pose_map_r = nn.Linear(hidden, pose_dim)
        self.id_embed = nn.Embedding(num_ids, hidden)

    @classmethod
    def official_config(cls) -> dict[str, Any]:
        """The official model: wav2vec2-base inside, d=512, 8 layers, 8 heads, ffn 1024."""
        return {"audio_dim": 768, "hidden": 512, "heads": 8, "layers": 8, "ffn": 1024, "num_ids": 100,
                "max_len": 600, "pose_dim": 6, "dropout": 0.1, "wav2vec2": dict(OFFICIAL_WAV2VEC2)}

    @classmethod
    def tiny_config(cls, audio_dim: int = 32) -> dict[str, Any]:
        """A tiny model for tests with a tiny random wav2vec2 of hidden size ``audio_dim``."""
        return {**cls.official_config(), "audio_dim": audio_dim, "hidden": 32, "heads": 2, "layers": 2, "ffn": 64,
                "wav2vec2": {**TINY_WAV2VEC2, "hidden_size": audio_dim}}

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
        """Poses (B, seq_len, 6) of normalised 16 kHz audio (B, samples).

        The utterance is encoded once (frame-aligned wav2vec2 features), as the trainer's
        cached features are, then generated in chunks of ``chunk_seconds`` (the short remainder
        joins the last), each from a zero pose (:meth:`generate`). The official script encodes
        each 5 s of audio on its own instead; under 10 s (all it supports) both are one chunk.
        """
        if self.audio_encoder is None:
            raise RuntimeError("this Audio2Pose model has no wav2vec2 inside; run generate() on cached features "
                               "or attach one with set_audio_encoder()")
        return self.generate(self.audio_encoder(input_values, seq_len), id_index,
                             chunk=max(1, round(chunk_seconds * fps)))
