"""The wav2vec2 audio encoder inside Audio2Mesh and Audio2Pose (official ``audio_encoder.*``).

A transformers ``Wav2Vec2Model`` whose forward interpolates the CNN features (~50 Hz) to
the video frame count (``align_corners=True``) BEFORE the transformer encoder, as the
official AniPortrait code does, so the output has one row per video frame.

The positional convolution keeps transformers' parametrized weight norm, but the state
dict names its parts ``encoder.pos_conv_embed.conv.weight_g / weight_v`` exactly as the
official checkpoints (saved with torch 2.0.1) do; both namings load.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aniportrait.audio import ModelLoadError

#: facebook/wav2vec2-base-960h, the wav2vec2 the official audio models were built on.
OFFICIAL_WAV2VEC2: dict = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "mask_time_prob": 0.05,
    "vocab_size": 32, "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.1, "layerdrop": 0.1,
}

#: A tiny random wav2vec2 for tests and demos (the shape of the tests' ``tiny_wav2vec2`` fixture).
TINY_WAV2VEC2: dict = {
    **OFFICIAL_WAV2VEC2, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}

logger = logging.getLogger(__name__)

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
        cnn = self.feature_extractor(input_values)                               # (B, C, ~50 Hz)
        aligned = F.interpolate(cnn, size=int(seq_len), mode="linear", align_corners=True).transpose(1, 2)
        hidden, _ = self.feature_projection(aligned)
        hidden = self._mask_hidden_states(hidden)                                # SpecAugment, training only
        return self.encoder(hidden).last_hidden_state


def _save_official_names(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict post hook of the positional conv: save its weight-norm parts as ``weight_g``/``weight_v``.

    The conv's entries are the last ones added when this runs, so renaming keeps the
    official order (``bias, weight_g, weight_v``). Loading either naming works: torch's
    own hook maps ``weight_g``/``weight_v`` onto the parametrization.
    """
    for new, old in _PARAMETRIZED.items():
        if prefix + new in state_dict:
            state_dict[prefix + old] = state_dict.pop(prefix + new)


def structure(config: Wav2Vec2Config) -> dict:
    """The architecture values of ``config`` (the keys of :data:`OFFICIAL_WAV2VEC2`), JSON-ready."""
    values = config.to_dict()
    return {key: list(values[key]) if isinstance(values[key], tuple) else values[key] for key in OFFICIAL_WAV2VEC2}


def load_audio_encoder(name_or_path: str) -> AudioEncoder:
    """Pretrained wav2vec2 weights from a local folder or a hub id (``--wav2vec2``).

    Offline, a hub id that is not cached raises :class:`ModelLoadError` saying how to fix it.
    """
    try:
        pretrained = Wav2Vec2Model.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load wav2vec2 model {name_or_path!r} ({str(exc).splitlines()[0]}); pass --wav2vec2 with a "
            "local folder holding a saved Wav2Vec2Model (config.json + weights) or a hub id that is reachable "
            "or already cached"
        ) from exc
    encoder = AudioEncoder(pretrained.config)
    encoder.load_state_dict(pretrained.state_dict(), strict=True)
    return encoder.eval()


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool, name: str) -> None:
    """Load ``state`` into ``model`` (weight norm named ``weight_g``/``weight_v`` or parametrized).

    With ``strict`` any missing or unexpected key fails, naming the keys (the official
    script loads with ``strict=False``); a shape mismatch always fails.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{name} does not fit {type(model).__name__}: {exc}") from exc
    problems = [f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)} keys)"
                for label, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        message = f"{name} does not match {type(model).__name__}: {'; '.join(problems)}"
        if strict:
            raise ValueError(message)
        logger.warning("%s (loaded the rest)", message)


def split_checkpoint(checkpoint: Mapping) -> tuple[Mapping[str, torch.Tensor], dict | None]:
    """``(state_dict, model_config_dict or None)`` of an official state dict or a trainer checkpoint.

    A trainer checkpoint is ``{"model": state_dict, "config": {...}}`` whose config holds
    the model config under ``"model"`` (``Audio2MeshConfig.to_dict()``) or is that dict itself.
    """
    if "model" in checkpoint and isinstance(checkpoint["model"], Mapping):
        config = checkpoint.get("config") or {}
        model_config = config.get("model") if isinstance(config.get("model"), Mapping) else config
        return checkpoint["model"], dict(model_config) or None
    return checkpoint, None


def build_from_checkpoint(checkpoint: str | Path | Mapping, kind: str, model_cls: type, config_cls: type, *,
                          strict: bool = True) -> nn.Module:
    """``model_cls`` built from a checkpoint's config (official sizes when it has none) and loaded.

    A trainer checkpoint of another ``kind`` (its ``"kind"`` entry) fails clearly.
    """
    name = Path(checkpoint).name if isinstance(checkpoint, (str, Path)) else "checkpoint"
    if isinstance(checkpoint, (str, Path)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if checkpoint.get("kind", kind) != kind:
        raise ValueError(f"{name} is an {checkpoint['kind']} checkpoint, not {kind}")
    state, config = split_checkpoint(checkpoint)
    if config is None:
        model = model_cls(config_cls.official())
    else:
        known = {f.name for f in dataclasses.fields(config_cls)}
        model = model_cls(config_cls.from_dict({k: v for k, v in config.items() if k in known}))
    load_model_state(model, state, strict=strict, name=name)
    return model.eval()
