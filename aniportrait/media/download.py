"""Fetch source videos: from a local mirror, or with yt-dlp into the work area.

Every download lands in a private temporary folder under the destination first and is
moved to ``<dest>/<name>.<ext>`` with one ``os.replace``, so a reader never sees a
partial file under a final name. Failures are raised as :class:`DownloadError` with a
short machine-readable ``reason`` that the manifest records.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import yt_dlp
import yt_dlp.version
from yt_dlp.utils import YoutubeDLError

from aniportrait.ids import UnsafePathError, is_safe_id

log = logging.getLogger(__name__)

#: Extensions a source video may have, in lookup order.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv")

#: Every value :attr:`DownloadError.reason` can take.
DOWNLOAD_ERROR_REASONS = (
    "removed",
    "private",
    "bot_check",
    "http_error",
    "unavailable",
    "geo_blocked",
    "age_restricted",
    "network",
    "not_found_in_mirror",
    "other",
)

# Lower-case fragments of yt-dlp / site messages, checked in this order: the first reason
# with a matching fragment wins. Order matters: YouTube prefixes many specific reasons
# with "Video unavailable." and appends a "Use --cookies ..." hint to every "Sign in"
# reason, so the specific reasons come before "unavailable".
_REASON_PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("age_restricted", ("confirm your age", "age-restricted", "age restricted",
                        "inappropriate for some users")),
    ("bot_check", ("not a bot", "captcha", "rate-limited", "http error 429")),
    ("private", ("private video", "video is private")),
    ("removed", ("removed by the uploader", "has been removed", "has been terminated",
                 "no longer available")),
    ("geo_blocked", ("available in your country", "from your location",
                     "geo restriction", "geo-restriction", "geo restricted")),
    ("http_error", ("http error",)),
    ("network", ("connection refused", "timed out", "name or service not known",
                 "failed to resolve", "temporary failure in name resolution",
                 "network is unreachable", "no route to host", "connection reset",
                 "connection aborted", "remote end closed connection")),
    ("unavailable", ("video unavailable", "video is unavailable", "video is not available",
                     "content isn't available", "video does not exist")),
)

# yt-dlp remux rule: keep the known containers, move anything else (ts, 3gp, ...) to mkv.
_REMUX_RULE = "/".join(f"{ext[1:]}>{ext[1:]}" for ext in VIDEO_EXTENSIONS) + "/mkv"


class DownloadError(Exception):
    """A source video could not be obtained.

    ``reason`` is one of :data:`DOWNLOAD_ERROR_REASONS`; ``detail`` is the underlying
    message (for yt-dlp failures, its error text). Picklable, so it crosses processes.
    """

    def __init__(self, url: str, reason: str, detail: str = "") -> None:
        if reason not in DOWNLOAD_ERROR_REASONS:
            raise ValueError(f"unknown download error reason {reason!r}")
        super().__init__(url, reason, detail)
        self.url = url
        self.reason = reason
        self.detail = " ".join(detail.split())

    def __str__(self) -> str:
        text = f"download of {self.url} failed ({self.reason})"
        return f"{text}: {self.detail}" if self.detail else text


def classify_download_error(message: str) -> str:
    """Map a yt-dlp error message to one of :data:`DOWNLOAD_ERROR_REASONS`."""
    text = message.lower().replace("\u2019", "'")
    for reason, fragments in _REASON_PATTERNS:
        if any(fragment in text for fragment in fragments):
            return reason
    return "other"


def _find_video(folder: Path, names: Sequence[str]) -> Path | None:
    """First regular file ``folder/<name><ext>`` for safe names and known extensions."""
    for name in names:
        if not is_safe_id(name):
            log.warning("skipping unsafe video name %r under %s", name, folder)
            continue
        for ext in VIDEO_EXTENSIONS:
            candidate = folder / f"{name}{ext}"
            if candidate.is_file():
                return candidate
    return None


def find_in_mirror(mirror_dir: str | Path, names: Sequence[str]) -> Path | None:
    """First existing ``<mirror>/<name><ext>``, names in order, then extensions in order.

    Names that are not safe ids are skipped, never joined. Only regular files count (a
    symlink to a file does, a directory does not).
    """
    return _find_video(Path(mirror_dir), names)


class _YtDlpLogger:
    """Routes yt-dlp's output to :mod:`logging` (errors are re-raised, so logged at debug)."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.warning("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)


def _format_selector(max_height: int | None, with_audio: bool) -> str:
    if max_height is None:
        return "bv*+ba/b" if with_audio else "bv*/b"
    h = max_height
    if with_audio:
        return f"bv*[height<={h}]+ba/b[height<={h}]/bv*+ba/b"
    return f"bv*[height<={h}]/b[height<={h}]/bv*/b"


def _ytdlp_options(
    tmp_dir: Path,
    name: str,
    *,
    max_height: int | None,
    with_audio: bool,
    retries: int,
    socket_timeout: float,
) -> dict[str, object]:
    return {
        "format": _format_selector(max_height, with_audio),
        "merge_output_format": "mp4/mkv",
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": _REMUX_RULE}],
        "outtmpl": {"default": f"{name}.%(ext)s"},
        "paths": {"home": str(tmp_dir), "temp": str(tmp_dir)},
        "noplaylist": True,
        "quiet": True,
        "noprogress": True,
        "color": "no_color",
        "logger": _YtDlpLogger(),
        "retries": retries,
        "fragment_retries": retries,
        "socket_timeout": socket_timeout,
        "cachedir": False,
        "overwrites": True,
    }


def download_video(
    url: str,
    dest_dir: str | Path,
    name: str,
    *,
    max_height: int | None = None,
    with_audio: bool = True,
    retries: int = 3,
    socket_timeout: float = 30.0,
) -> Path:
    """Download ``url`` with yt-dlp to ``dest_dir/<name>.<ext>`` and return that path.

    An existing ``<name>`` video in ``dest_dir`` is returned without downloading. The
    file appears atomically; the private temp folder is removed whatever happens.
    Raises ``ValueError`` for an unsafe ``name`` or bad options, :class:`DownloadError`
    when yt-dlp fails.
    """
    if not is_safe_id(name):
        raise UnsafePathError(f"refusing unsafe video name {name!r}")
    if max_height is not None and max_height <= 0:
        raise ValueError(f"max_height must be positive, got {max_height}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if socket_timeout <= 0:
        raise ValueError(f"socket_timeout must be positive, got {socket_timeout}")

    dest = Path(dest_dir)
    existing = _find_video(dest, [name])
    if existing is not None:
        log.info("%s already downloaded: %s", url, existing)
        return existing

    dest.mkdir(parents=True, exist_ok=True)
    tmp_dir = dest / f".tmp-{name}-{uuid.uuid4().hex}"
    tmp_dir.mkdir()
    try:
        options = _ytdlp_options(
            tmp_dir, name, max_height=max_height, with_audio=with_audio,
            retries=retries, socket_timeout=socket_timeout,
        )
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.extract_info(url, download=True)
        except YoutubeDLError as exc:
            message = str(exc).removeprefix("ERROR: ")
            raise DownloadError(url, classify_download_error(message), message) from exc
        produced = _find_video(tmp_dir, [name])
        if produced is None:
            left = sorted(p.name for p in tmp_dir.iterdir())
            raise DownloadError(url, "other", f"yt-dlp produced no {name} video, found {left}")
        final = dest / produced.name
        os.replace(produced, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("downloaded %s to %s", url, final)
    return final


def ytdlp_version() -> str:
    """Version string of the installed yt-dlp (recorded in the manifest)."""
    return yt_dlp.version.__version__
