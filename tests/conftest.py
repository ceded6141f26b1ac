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
