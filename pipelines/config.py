"""The settings of one build, and the hash that says which outputs they produce."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aniportrait.media.cut import CutSettings

#: Fields that do not change a single output byte (where and how fast it runs).
RUNTIME_FIELDS = ("out", "work_dir", "mirror", "address", "workers", "download_workers", "metadata", "face_model",
                  "wav2vec2")


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``aniportrait-data build`` was asked to do."""

    dataset: str
    out: str
    work_dir: str
    metadata: str | None = None
    mirror: str | None = None
    address: str | None = None
    workers: int | None = None
    download_workers: int = 4
    limit: int | None = None
    split: str = "train"
    cut: CutSettings = field(default_factory=CutSettings)
    shard_samples: int = 1000
    download_retries: int = 3
    face_model: str | None = None
    landmarker_mode: str = "video"
    min_face_rate: float = 0.9
    wav2vec2: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if not 0.0 <= self.min_face_rate <= 1.0:
            raise ValueError(f"--min-face-rate must be within 0..1, got {self.min_face_rate}")
        if self.shard_samples < 1:
            raise ValueError(f"--shard-samples must be at least 1, got {self.shard_samples}")

    def resolved(self) -> BuildConfig:
        """The same config with local paths made absolute (Ray workers have other cwds)."""
        return dataclasses.replace(
            self,
            out=_absolute(self.out),
            work_dir=_absolute(self.work_dir),
            mirror=_absolute(self.mirror) if self.mirror else None,
            metadata=_absolute(self.metadata) if self.metadata else None,
            face_model=_absolute(self.face_model) if self.face_model else None,
        )

    def content_config(self) -> dict[str, Any]:
        """The settings that shape the output bytes (recorded in ``release.json``)."""
        data = dataclasses.asdict(self)
        for name in RUNTIME_FIELDS:
            data.pop(name)
        return data

    def content_hash(self) -> str:
        return config_hash(self.content_config())


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def config_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able settings dict."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
