"""Fetch source videos: from a local mirror, or with yt-dlp into the work area.

A download writes into a stable partial folder ``<dest>/<name>.partial/``, where yt-dlp
keeps its ``.part`` files and continues them when the download runs again (after a cut
connection or a killed build). The finished file is checked with ffprobe (a video
stream and a duration) and then moved to ``<dest>/<name>.<ext>`` with one ``os.replace``,
so a reader never sees a partial file under a final name. The caller runs one download
per name at a time (the build holds a per-source lock). Failures are raised as
:class:`DownloadError` with a short machine-readable ``reason`` that the manifest records.

This module also owns the user's yt-dlp settings (:class:`DownloadSettings`): cookies,
proxy and extra YoutubeDL parameters, checked against the names yt-dlp documents, and
the rule that no secret (cookie values, ``user:pass@`` in a URL) reaches a message.
"""

from __future__ import annotations

import contextlib
import difflib
import http.cookiejar
import json
import logging
import optparse
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yt_dlp
import yt_dlp.version
from yt_dlp.utils import YoutubeDLError

from aniportrait.ids import UnsafePathError, is_safe_id
from aniportrait.media.probe import MediaError, probe

log = logging.getLogger(__name__)

#: Extensions a source video may have, in lookup order.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".flv")
#: Suffix of the folder a download of ``<name>`` writes into until it is finished.
PARTIAL_SUFFIX = ".partial"

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
    "bad_download",
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
                 "connection aborted", "remote end closed connection", "more expected",
                 "unable to connect to proxy")),
    ("unavailable", ("video unavailable", "video is unavailable", "video is not available",
                     "content isn't available", "video does not exist")),
)

# yt-dlp remux rule: keep the known containers, move anything else (ts, 3gp, ...) to mkv.
_REMUX_RULE = "/".join(f"{ext[1:]}>{ext[1:]}" for ext in VIDEO_EXTENSIONS) + "/mkv"

#: YoutubeDL parameters the download sets itself (file names and places, logging,
#: post-processing): ``--yt-dlp-option`` and ``--yt-dlp-config`` may not change them.
OWN_OPTIONS = frozenset({"outtmpl", "paths", "logger", "progress_hooks", "postprocessor_hooks", "post_hooks",
                         "postprocessors", "merge_output_format", "noplaylist"})
#: Proxy URL schemes yt-dlp accepts.
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@]+@")


def redact(text: str) -> str:
    """``text`` with the ``user:pass@`` part of every URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


class DownloadError(Exception):
    """A source video could not be obtained.

    ``reason`` is one of :data:`DOWNLOAD_ERROR_REASONS`; ``detail`` is the underlying
    message (for yt-dlp failures, its error text). Credentials in URLs are redacted from
    both. Picklable, so it crosses processes.
    """

    def __init__(self, url: str, reason: str, detail: str = "") -> None:
        if reason not in DOWNLOAD_ERROR_REASONS:
            raise ValueError(f"unknown download error reason {reason!r}")
        url, detail = redact(url), redact(" ".join(detail.split()))
        super().__init__(url, reason, detail)
        self.url = url
        self.reason = reason
        self.detail = detail

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


# --------------------------------------------------------------------------- settings


@cache
def ytdlp_param_names() -> frozenset[str]:
    """Every YoutubeDL parameter name this yt-dlp knows: those its ``YoutubeDL`` docstring
    documents (``name:`` entries and the downloader's list), and those its own command
    line parser produces."""
    doc = yt_dlp.YoutubeDL.__doc__ or ""
    names = set(re.findall(r"^    ([a-z_][a-z0-9_]*):", doc, flags=re.MULTILINE))
    downloader = re.search(r"used by\s+the downloader \(see [^)]*\):\s*(.*?)\.\n", doc, flags=re.DOTALL)
    if downloader:
        names.update(name.strip() for name in downloader.group(1).split(","))
    names.update(key for key in yt_dlp.parse_options([]).ydl_opts if not key.startswith("_"))
    return frozenset(names)


def check_ytdlp_options(options: Mapping[str, Any], source: str) -> None:
    """Raise ``ValueError`` (naming ``source``, the option or file it came from) for a key
    that is no YoutubeDL parameter or one the download sets itself (:data:`OWN_OPTIONS`)."""
    known = ytdlp_param_names()
    for key in options:
        if key in OWN_OPTIONS:
            raise ValueError(f"{source}: yt-dlp option {key!r} is set by the build itself (file names, folders, "
                             "logging and remuxing); leave it out")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"{source}: {key!r} is not a yt-dlp option (a YoutubeDL parameter name, e.g. "
                             f"ratelimit, sleep_interval_requests, extractor_args){hint}")


def parse_ytdlp_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--yt-dlp-option``: the value as JSON when it parses (numbers,
    booleans, lists, objects), else as a string; the key must be a YoutubeDL parameter."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--yt-dlp-option takes KEY=VALUE (e.g. ratelimit=1000000), got {redact(text)!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    check_ytdlp_options({key: parsed}, "--yt-dlp-option")
    return key, parsed


def read_ytdlp_config(path: str | Path) -> dict[str, Any]:
    """The YoutubeDL parameters a yt-dlp config file (command line options, one or more a
    line) sets, read by yt-dlp's own parser: those that differ from yt-dlp's defaults."""
    try:
        defaults = yt_dlp.parse_options([]).ydl_opts
        parsed = yt_dlp.parse_options(["--config-locations", str(path)])
    except (optparse.OptParseError, SystemExit) as exc:  # yt-dlp's parser raises these
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read --yt-dlp-config {path}: {redact(message.split('error: ')[-1])}") from None
    if parsed.urls:
        raise ValueError(f"--yt-dlp-config {path} names URLs; it may hold options only")
    options = {key: value for key, value in parsed.ydl_opts.items()
               if not key.startswith("_") and defaults.get(key) != value}
    check_ytdlp_options(options, f"--yt-dlp-config {path}")
    return options


def check_proxy(proxy: str) -> None:
    """Raise ``ValueError`` unless ``proxy`` is a proxy URL yt-dlp takes (credentials redacted)."""
    parts = urlsplit(proxy)
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(f"--proxy {redact(proxy)!r} is not a proxy URL: give SCHEME://[USER:PASS@]HOST:PORT with "
                         f"SCHEME one of {', '.join(PROXY_SCHEMES)}")


def check_cookies_file(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a readable Netscape cookies file holding a
    cookie. The message names the file and line, never a cookie."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --cookies {path}: {type(exc).__name__}") from None
    if not lines or not http.cookiejar.NETSCAPE_MAGIC_RGX.match(lines[0]):
        raise ValueError(f"--cookies {path} is not a Netscape cookies file (its first line must be "
                         "'# Netscape HTTP Cookie File'); export the cookies again with a cookies.txt exporter")
    cookies = 0
    for number, line in enumerate(lines, 1):
        line = line.removeprefix("#HttpOnly_")
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 7 or (fields[4] and not re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", fields[4])):
            raise ValueError(f"--cookies {path} line {number} is not a Netscape cookie line "
                             "(7 tab-separated fields: domain, subdomains, path, https, expiry, name, value)")
        cookies += 1
    if not cookies:
        raise ValueError(f"--cookies {path} holds no cookie")


@dataclass(frozen=True)
class DownloadSettings:
    """The user's yt-dlp settings: none of them changes an output byte.

    ``cookies`` is a Netscape cookies file (each download hands yt-dlp a private copy,
    which yt-dlp may rewrite, and deletes it); ``proxy`` a proxy URL; ``options`` more
    YoutubeDL parameters (from ``--yt-dlp-option`` and ``--yt-dlp-config``), which the
    two override.
    """

    cookies: str | None = None
    proxy: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ytdlp_options(self.options, "yt-dlp options")
        if self.proxy is not None:
            check_proxy(self.proxy)

    def params(self) -> dict[str, Any]:
        """The YoutubeDL parameters: ``options``, then the cookies file and proxy."""
        params = dict(self.options)
        if self.cookies is not None:
            params["cookiefile"] = self.cookies
        if self.proxy is not None:
            params["proxy"] = self.proxy
        return params


# --------------------------------------------------------------------------- download


class _YtDlpLogger:
    """Routes yt-dlp's output to :mod:`logging`, credentials redacted (errors are re-raised,
    so logged at debug)."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", redact(message))

    def warning(self, message: str) -> None:
        log.warning("yt-dlp: %s", redact(message))

    def error(self, message: str) -> None:
        log.debug("yt-dlp: %s", redact(message))


def _format_selector(max_height: int | None, with_audio: bool) -> str:
    if max_height is None:
        return "bv*+ba/b" if with_audio else "bv*/b"
    h = max_height
    if with_audio:
        return f"bv*[height<={h}]+ba/b[height<={h}]/bv*+ba/b"
    return f"bv*[height<={h}]/b[height<={h}]/bv*/b"


def _ytdlp_options(folder: Path, name: str, *, max_height: int | None, with_audio: bool, retries: int,
                   socket_timeout: float, settings: DownloadSettings) -> dict[str, object]:
    """The YoutubeDL parameters of one download: the build's defaults, the user's settings,
    then what the download relies on (file names, folder, resuming, logging)."""
    return {
        "format": _format_selector(max_height, with_audio),
        "retries": retries,
        "fragment_retries": retries,
        "socket_timeout": socket_timeout,
        "cachedir": False,
        **settings.params(),
        "merge_output_format": "mp4/mkv",
        "postprocessors": [{"key": "FFmpegVideoRemuxer", "preferedformat": _REMUX_RULE}],
        "outtmpl": {"default": f"{name}.%(ext)s"},
        "paths": {"home": str(folder), "temp": str(folder)},
        "continuedl": True,
        "noplaylist": True,
        "quiet": True,
        "noprogress": True,
        "color": "no_color",
        "logger": _YtDlpLogger(),
    }


@contextlib.contextmanager
def _private_cookies(options: dict[str, object]) -> Iterator[None]:
    """Point ``options["cookiefile"]`` (when set) at a private copy (mode 0600, in the
    system temp folder) for one download: yt-dlp rewrites its cookies file, and downloads
    running at once must not rewrite the user's. The copy is deleted afterwards."""
    cookies = options.get("cookiefile")
    if cookies is None:
        yield
        return
    handle, copy = tempfile.mkstemp(prefix="aniportrait-cookies-", suffix=".txt")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(Path(str(cookies)).read_bytes())
        options["cookiefile"] = copy
        yield
    finally:
        os.unlink(copy)


def _check_download(path: Path, url: str) -> None:
    """Raise :class:`DownloadError` (``bad_download``) unless ffprobe finds a video stream
    and a duration in the finished download ``path``."""
    try:
        info = probe(path)
    except MediaError as exc:
        raise DownloadError(url, "bad_download", f"the downloaded file is not a usable video: {exc}") from None
    if info.duration_s <= 0:
        raise DownloadError(url, "bad_download", f"the downloaded file {path.name} has no duration")


def download_video(
    url: str,
    dest_dir: str | Path,
    name: str,
    *,
    max_height: int | None = None,
    with_audio: bool = True,
    retries: int = 3,
    socket_timeout: float = 30.0,
    settings: DownloadSettings | None = None,
) -> Path:
    """Download ``url`` with yt-dlp to ``dest_dir/<name>.<ext>`` and return that path.

    An existing ``<name>`` video in ``dest_dir`` is returned without downloading. The
    download goes through ``<name>.partial/`` (see the module docstring): a failed one
    leaves what it got there for the next call to continue; a finished one that ffprobe
    cannot read is deleted and fails with reason ``bad_download``. Raises ``ValueError``
    for an unsafe ``name`` or bad options, :class:`DownloadError` when yt-dlp fails.
    ``settings`` are the user's cookies, proxy and yt-dlp options.
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
        log.info("%s already downloaded: %s", redact(url), existing)
        return existing

    partial = dest / f"{name}{PARTIAL_SUFFIX}"
    partial.mkdir(parents=True, exist_ok=True)
    options = _ytdlp_options(partial, name, max_height=max_height, with_audio=with_audio, retries=retries,
                             socket_timeout=socket_timeout, settings=settings or DownloadSettings())
    try:
        with _private_cookies(options), yt_dlp.YoutubeDL(options) as ydl:
            ydl.extract_info(url, download=True)
    except YoutubeDLError as exc:
        message = str(exc).removeprefix("ERROR: ")
        raise DownloadError(url, classify_download_error(message), message) from exc
    finally:
        with contextlib.suppress(OSError):  # nothing to continue: no folder left behind
            partial.rmdir()
    produced = _find_video(partial, [name])
    if produced is None:
        left = sorted(p.name for p in partial.iterdir()) if partial.is_dir() else []
        shutil.rmtree(partial, ignore_errors=True)
        raise DownloadError(url, "other", f"yt-dlp produced no {name} video, found {left}")
    try:
        _check_download(produced, url)
    except DownloadError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    final = dest / produced.name
    os.replace(produced, final)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("downloaded %s to %s", redact(url), final)
    return final


def ytdlp_version() -> str:
    """Version string of the installed yt-dlp (recorded in the manifest)."""
    return yt_dlp.version.__version__
