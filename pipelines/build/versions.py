"""Versions of the tools that shaped a release (recorded in ``release.json``)."""

from __future__ import annotations

import platform
from importlib import metadata

from aniportrait.media.probe import tool_version

PACKAGES = ("aniportrait-data", "ray", "webdataset", "pyarrow", "numpy", "yt-dlp", "mediapipe", "decord")


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def tool_versions() -> dict[str, str]:
    """Python, ffmpeg and the Python packages whose behaviour reaches the output."""
    versions = {name: _package_version(name) for name in PACKAGES}
    versions["python"] = platform.python_version()
    versions["ffmpeg"] = tool_version("ffmpeg")
    return versions
