"""The settings of one build, and the hash that says which outputs they produce."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aniportrait.media.cut import CutSettings
from aniportrait.media.download import DownloadSettings, check_cookies_file
from aniportrait.media.throttle import DEFAULT_MAX_BOT_CHECKS
from aniportrait.segment import SegmentSettings
from pipelines.build.curation import CurationSettings

#: Fields that do not change a single output byte (where and how fast it runs, and how it
#: downloads: these hold secrets, so they never reach ``release.json``).
RUNTIME_FIELDS = ("out", "work_dir", "mirror", "address", "workers", "download_workers", "metadata", "face_model",
                  "wav2vec2", "retry_failed", "strict_metadata", "cookies", "proxy", "ytdlp_options",
                  "download_rate", "max_bot_checks", "no_download")
#: Clips per shard when neither a sample count nor a byte size is given.
DEFAULT_SHARD_SAMPLES = 1000
#: Byte units of ``--shard-size`` (SI powers of 1000, IEC powers of 1024), upper case.
SIZE_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
              "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


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
    #: Shards hold this many clips, or (exactly one of the two) at most ``shard_bytes``
    #: bytes; neither given means ``DEFAULT_SHARD_SAMPLES`` clips.
    shard_samples: int | None = None
    shard_bytes: int | None = None
    #: Shard clips a curation rule rejected (status ``filtered``) into ``*-rejected-*`` shards.
    keep_rejected: bool = False
    #: Run again the clips the previous release records as failed (their cached failures are forgotten).
    retry_failed: bool = False
    #: Stop at the first malformed metadata entry (exit 2) instead of recording it as a failed row.
    strict_metadata: bool = False
    download_retries: int = 3
    #: Netscape cookies file and proxy URL for yt-dlp, and more YoutubeDL parameters.
    cookies: str | None = None
    proxy: str | None = None
    ytdlp_options: dict[str, Any] = field(default_factory=dict)
    #: Downloads started per minute, for the whole build (``None``: no limit).
    download_rate: float | None = None
    #: Bot checks or HTTP 429 answers in a row that stop the downloads (and the build, exit 2).
    max_bot_checks: int = DEFAULT_MAX_BOT_CHECKS
    #: Sources only from the mirror (and earlier downloads): never start a download.
    no_download: bool = False
    face_model: str | None = None
    landmarker_mode: str = "video"
    min_face_rate: float = 0.9
    wav2vec2: str | None = None
    curation: CurationSettings = field(default_factory=CurationSettings)
    #: How a dataset of whole videos (``folder``) is cut into clips; ``None`` for datasets with clip lists.
    segment: SegmentSettings | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be at least 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {self.limit}")
        if not 0.0 <= self.min_face_rate <= 1.0:
            raise ValueError(f"--min-face-rate must be within 0..1, got {self.min_face_rate}")
        if self.shard_samples is not None and self.shard_bytes is not None:
            raise ValueError("give a shard size either as a clip count or in bytes, not both")
        if self.shard_samples is None and self.shard_bytes is None:
            object.__setattr__(self, "shard_samples", DEFAULT_SHARD_SAMPLES)
        if self.shard_samples is not None and self.shard_samples < 1:
            raise ValueError(f"--shard-samples must be at least 1, got {self.shard_samples}")
        if self.shard_bytes is not None and self.shard_bytes < 1:
            raise ValueError(f"--shard-size must be at least 1 byte, got {self.shard_bytes}")
        if self.download_rate is not None and self.download_rate <= 0:
            raise ValueError(f"--download-rate must be positive, got {self.download_rate}")
        if self.max_bot_checks < 1:
            raise ValueError(f"--max-bot-checks must be at least 1, got {self.max_bot_checks}")
        self.download_settings()
        if self.cookies is not None:
            check_cookies_file(self.cookies)

    def download_settings(self) -> DownloadSettings:
        """The yt-dlp settings (checked: known options, a proxy URL)."""
        return DownloadSettings(cookies=self.cookies, proxy=self.proxy, options=self.ytdlp_options)

    def resolved(self) -> BuildConfig:
        """The same config with local paths made absolute (Ray workers have other cwds)."""
        return dataclasses.replace(
            self,
            out=_absolute(self.out),
            work_dir=_absolute(self.work_dir),
            mirror=_absolute(self.mirror) if self.mirror else None,
            metadata=_absolute(self.metadata) if self.metadata else None,
            face_model=_absolute(self.face_model) if self.face_model else None,
            cookies=_absolute(self.cookies) if self.cookies else None,
        )

    def content_config(self) -> dict[str, Any]:
        """The settings that shape the output bytes (recorded in ``release.json``)."""
        data = dataclasses.asdict(self)
        for name in RUNTIME_FIELDS:
            data.pop(name)
        if data["segment"] is None:  # datasets with clip lists: the same hash as before the field existed
            data.pop("segment")
        return data

    def content_hash(self) -> str:
        return config_hash(self.content_config())


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def config_hash(settings: dict[str, Any]) -> str:
    """A short stable hash of a JSON-able settings dict."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_shard_size(text: str) -> tuple[int | None, int | None]:
    """``--shard-size``: a plain clip count (``1000``) or a byte size (``1GB``, ``500MB``,
    ``64KiB``, ``1.5GiB``); returns ``(shard_samples, shard_bytes)`` with one of them set."""
    value = text.strip().replace(" ", "")
    if value.isdigit():
        return int(value), None
    number = value.rstrip("BbIiKkMmGgTt")
    unit = value[len(number):].upper()
    if unit not in SIZE_UNITS or not number:
        raise ValueError(f"--shard-size {text!r}: give a clip count (1000) or a size such as 1GB, 500MB or 64KiB "
                         f"(units: {', '.join(u.replace('I', 'i') for u in SIZE_UNITS)})")
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        raise ValueError(f"--shard-size {text!r}: {number!r} is not a number") from None
    return None, size
