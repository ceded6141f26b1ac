"""The wav2vec2 audio encoder inside Audio2Mesh and Audio2Pose (official ``audio_encoder.*``).

A transformers ``Wav2Vec2Model`` whose forward interpolates the CNN features (~50 Hz) to
the video frame count (``align_corners=True``) BEFORE the transformer encoder, as the
official AniPortrait code does, so the output has one row per video frame. The alignment and
the encoder pass are :func:`aniportrait.audio.frame_aligned_cnn` and
:func:`aniportrait.audio.encode_aligned`, the same the build's cached features go through.

The positional convolution keeps transformers' parametrized weight norm, but the state
dict names its parts ``encoder.pos_conv_embed.conv.weight_g / weight_v`` exactly as the
official checkpoints (saved with torch 2.0.1) do; both namings load.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aniportrait.audio import encode_aligned, frame_aligned_cnn, load_wav2vec2

_PARAMETRIZED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


class AudioEncoder(Wav2Vec2Model):
    """wav2vec2 with frame-aligned features: ``forward(input_values, seq_len) -> (B, seq_len, hidden)``.

    The CNN feature encoder is frozen, as in the official models.
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.encoder.pos_conv_embed.conv.register_state_dict_post_hook(_save_official_names)
        self.feature_extractor._freeze_parameters()

    @classmethod
    def from_config_dict(cls, config: Mapping) -> AudioEncoder:
        """A randomly initialised encoder of the given ``Wav2Vec2Config`` values."""
        return cls(Wav2Vec2Config(**dict(config)))

    @property
    def min_samples(self) -> int:
        """The shortest input (samples) giving one CNN frame: the feature encoder's receptive field (400)."""
        field = 1
        for kernel, stride in zip(reversed(self.config.conv_kernel), reversed(self.config.conv_stride)):
            field = (field - 1) * stride + kernel
        return field

    def forward(self, input_values: torch.Tensor, seq_len: int) -> torch.Tensor:  # type: ignore[override]
        """Hidden states (B, seq_len, hidden) of normalised 16 kHz audio (B, samples)."""
        return encode_aligned(self, frame_aligned_cnn(self, input_values, seq_len))  # SpecAugment in training


def _save_official_names(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post hook of the positional conv: save its weight-norm parts as ``weight_g``/``weight_v``.

    The conv's entries are the last ones added when this runs, so renaming keeps the
    official order (``bias, weight_g, weight_v``). Loading either naming works: torch's
    own hook maps ``weight_g``/``weight_v`` onto the parametrization.
    """
    for new, old in _PARAMETRIZED.items():
        if prefix + new in state_dict:
            state_dict[prefix + old] = state_dict.pop(prefix + new)


def load_audio_encoder(name_or_path: str) -> AudioEncoder:
    """Pretrained wav2vec2 weights from a local folder or a hub id (``--wav2vec2``).

    Offline, a hub id that is not cached raises :class:`aniportrait.audio.ModelLoadError` saying how to fix it.
    """
    pretrained = load_wav2vec2(name_or_path)
    encoder = AudioEncoder(pretrained.config)
    encoder.load_state_dict(pretrained.state_dict(), strict=True)
    return encoder.eval()
