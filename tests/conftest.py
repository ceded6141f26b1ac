"""Shared test fixtures: where ``../shared`` lives and small helpers around it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIPORTRAIT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder with real media, metadata and golden data."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set ANIPORTRAIT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "media"


@pytest.fixture(scope="session")
def metadata_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "metadata"


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised, tiny Wav2Vec2Model saved with ``save_pretrained``."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    folder = tmp_path_factory.mktemp("wav2vec2")
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    return folder
