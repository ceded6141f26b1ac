"""Integrity checks for downloaded metadata."""

from __future__ import annotations

import hashlib


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of ``data``: sha1 of ``b"blob <size>\\0"`` followed by the bytes."""
    digest = hashlib.sha1(b"blob %d\x00" % len(data))
    digest.update(data)
    return digest.hexdigest()
