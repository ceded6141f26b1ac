"""Checkpoint plumbing of the Audio2Lmk models, without transformers.

The wav2vec2 config values of the official models, loading a state dict that names its
problems, and building a model from an official file or a trainer checkpoint. Kept apart
from :mod:`models.wav2vec` so code that trains the heads on cached features (Ray workers)
never imports transformers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

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


def structure(config) -> dict:
    """The architecture values of a ``Wav2Vec2Config`` (the keys of :data:`OFFICIAL_WAV2VEC2`), JSON-ready."""
    values = config.to_dict()
    return {key: list(values[key]) if isinstance(values[key], tuple) else values[key] for key in OFFICIAL_WAV2VEC2}


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
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and key errors for files it cannot read
            raise ValueError(f"{name} is not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{name} holds a {type(checkpoint).__name__}, not a state dict")
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
