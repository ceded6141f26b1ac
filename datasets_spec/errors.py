"""The one error every dataset parser raises for metadata it cannot read."""

from __future__ import annotations

from pathlib import Path


class MetadataError(ValueError):
    """Metadata that cannot be read at all; the message names the file (and line)."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        if self.path is not None and line is not None:
            message = f"{self.path}:{line}: {message}"
        elif self.path is not None:
            message = f"{self.path}: {message}"
        super().__init__(message)
