"""The wav2vec2 audio encoder inside Audio2Mesh and Audio2Pose (official ``audio_encoder.*``).

A transformers ``Wav2Vec2Model`` whose forward interpolates the CNN features (~50 Hz) to
the video frame count (``align_corners=True``) BEFORE the transformer encoder, as the
official AniPortrait code does, so the output has one row per video frame. The alignment and
the encoder pass are :func:`aniportrait.audio.frame_aligned_cnn` and
:func:`aniportrait.audio.encode_aligned`, the same the build's cached features go through.

The positional convolution keeps transformers' parametrized weight norm, but the state
dict names its parts ``encoder.pos_conv_embed.conv.weight_g / weight_v`` exactly as the
official checkpoints (saved with torch 2.0.1) do; both namings load.

:class:`AudioHeadMixin` is what the two audio models share: the optional encoder inside
(its sizes part of the model config), the official wav2vec2 sizes, and the official loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aniportrait.audio import encode_aligned, frame_aligned_cnn, load_wav2vec2
from models.official_weights import WEIGHT_NORM_NAMES, load_into, load_state_file

#: facebook/wav2vec2-base-960h, the wav2vec2 the official audio models were built on.
OFFICIAL_WAV2VEC2: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "mask_time_prob": 0.05,
    "vocab_size": 32, "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.1, "layerdrop": 0.1,
}

#: A tiny random wav2vec2 for tests and demos (the shape of the tests' ``tiny_wav2vec2`` fixture).
TINY_WAV2VEC2: dict[str, Any] = {
    **OFFICIAL_WAV2VEC2, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


class AudioEncoder(Wav2Vec2Model):
    """wav2vec2 with frame-aligned features: ``forward(input_values, seq_len) -> (B, seq_len, hidden)``.

    The CNN feature encoder is frozen, as in the official models. A transformers model: it
    saves and loads with its own ``save_pretrained``/``from_pretrained`` (a ``Wav2Vec2Config``).
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.encoder.pos_conv_embed.conv.register_state_dict_post_hook(_save_official_names)
        self.feature_extractor._freeze_parameters()

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> AudioEncoder:
        """A randomly initialised encoder of the given ``Wav2Vec2Config`` values."""
        return cls(Wav2Vec2Config(**dict(config)))

    def architecture(self) -> dict[str, Any]:
        """The architecture values of its config (the keys of :data:`OFFICIAL_WAV2VEC2`), JSON-ready."""
        values = self.config.to_dict()
        return {key: list(values[key]) if isinstance(values[key], tuple) else values[key] for key in OFFICIAL_WAV2VEC2}

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
    for new, old in WEIGHT_NORM_NAMES.items():
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


_Head = TypeVar("_Head", bound="AudioHeadMixin")


class AudioHeadMixin:
    """What Audio2Mesh and Audio2Pose share (mixed into a ``ModelMixin, ConfigMixin`` with an
    ``audio_dim`` and a ``wav2vec2`` config entry): the optional encoder inside, first in the
    state dict as officially, and the loader of the official files.

    ``wav2vec2`` None builds the head only, as the trainers do on cached features; attach an
    encoder later with :meth:`set_audio_encoder`.
    """

    audio_encoder: AudioEncoder | None

    def _init_audio_encoder(self, wav2vec2: Mapping[str, Any] | None) -> None:
        self.register_module("audio_encoder", None)  # type: ignore[attr-defined]
        if wav2vec2 is not None:
            self.set_audio_encoder(AudioEncoder.from_config_dict(wav2vec2))

    def set_audio_encoder(self, encoder: AudioEncoder) -> None:
        """Put ``encoder`` inside the model and record its sizes in the config (``wav2vec2``)."""
        audio_dim = self.config.audio_dim  # type: ignore[attr-defined]
        if encoder.config.hidden_size != audio_dim:
            raise ValueError(f"wav2vec2 hidden size {encoder.config.hidden_size} != audio_dim {audio_dim}")
        self.audio_encoder = encoder
        self.register_to_config(wav2vec2=encoder.architecture())  # type: ignore[attr-defined]

    @classmethod
    def load_official(cls: type[_Head], source: str | Path | Mapping[str, torch.Tensor],
                      config: Mapping[str, Any] | None = None, *, strict: bool = True) -> _Head:
        """The official ``audio2mesh.pt`` / ``audio2pose.pt`` (a file, or its loaded state dict) in this model.

        ``config`` defaults to the model's ``official_config()``. ``strict`` (default) fails with
        the differing keys named; the official script itself loads with ``strict=False``.
        """
        model = cls(**(config or cls.official_config()))  # type: ignore[attr-defined,call-arg]
        if isinstance(source, Mapping):
            load_into(model, source, "the official state dict", strict=strict)
        else:
            load_into(model, load_state_file(source), Path(source).name, strict=strict)
        return model.eval()  # type: ignore[attr-defined]
