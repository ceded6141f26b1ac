"""Filesystem-safe identifiers and contained path joins.

Clip and source ids come from third-party metadata. They become file names, tar member
names and WebDataset keys, so they are reduced to ``[A-Za-z0-9_-]`` (no dots: WebDataset
splits keys at the first dot) and every path built from them is checked to stay inside
its root directory.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


class UnsafePathError(ValueError):
    """A path derived from metadata would leave its root directory."""


def safe_id(raw: str) -> str:
    """Map any metadata string to a stable id made of ``[A-Za-z0-9_-]``.

    Safe strings are kept as they are. Others are sanitised and suffixed with a short
    hash of the original text, so two different raw ids never collide.
    """
    if SAFE_ID.match(raw):
        return raw
    cleaned = _UNSAFE_RUN.sub("_", raw).strip("_")[:100] or "id"
    digest = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
    return f"{cleaned}_{digest}"


def is_safe_id(text: str) -> bool:
    """True when ``text`` can be used as a file name and WebDataset key as it is."""
    return bool(SAFE_ID.match(text))


def contained_join(root: str, *parts: str) -> str:
    """Join ``parts`` under ``root`` (a local path or URI path) and refuse escapes.

    Each part must be a single safe path component (an id, optionally with a file
    extension); ``..``, separators and absolute parts raise :class:`UnsafePathError`.
    """
    for part in parts:
        stem = part.split(".", 1)[0] if not part.startswith(".") else ""
        if part in ("", ".", "..") or "/" in part or "\\" in part or not is_safe_id(stem):
            raise UnsafePathError(f"refusing unsafe path component {part!r} under {root!r}")
    joined = posixpath.join(root.rstrip("/") or "/", *parts)
    return joined
