"""The error every dataset parser raises or records for metadata it cannot read.

Two kinds of problem:

* the whole source cannot be read (the path does not exist, the JSON does not parse, a
  checksum does not match): :class:`MetadataError` is raised, and the build stops;
* one entry is malformed (a line, a JSON clip, a meta-info file): the parser hands a
  :class:`MetadataError` naming the entry to :func:`report`. With an ``errors`` list the
  error is appended and parsing goes on with the next entry (the build records the entry
  as a failed manifest row); without one (``strict``) it is raised at once.

Entry ids must be unique among a parse's records and errors: :func:`dedupe_entry_ids`
makes them so once a parser is done.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aniportrait.ids import safe_id
from aniportrait.schema import ClipRecord


class MetadataError(ValueError):
    """Metadata that cannot be read; the message names the file (and line or JSON key).

    For an entry error, ``clip_id`` is the id the entry's clip(s) would have had (already
    made safe) when it can be derived, ``source_id`` likewise; :attr:`entry_id` falls back
    to a stable id made of the file name and the line number or key (and ``repeat``, set by
    :func:`dedupe_entry_ids` when several entries share that place).
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 key: str | None = None, clip_id: str | None = None, source_id: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.key = key
        self.clip_id = clip_id
        self.source_id = source_id
        self.repeat = 1
        self.reason = message
        where = self.where(full_path=True)
        super().__init__(f"{where}: {message}" if where else message)

    def where(self, *, full_path: bool = False) -> str:
        """``file:line`` (or ``file``): the full path, or only the file name (machine-independent)."""
        if self.path is None:
            return ""
        name = self.path if full_path else Path(self.path).name
        return f"{name}:{self.line}" if self.line is not None else name

    @property
    def entry_id(self) -> str:
        """The manifest id of the malformed entry: its clip id, else ``<file>-L<line>`` / ``<file>-<key>``."""
        if self.clip_id:
            return self.clip_id
        return fallback_entry_id(self.path, self.line, self.key, self.repeat)

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the entry stands (file name, and line or key), as a clip record's provenance."""
        data: dict[str, Any] = {"file": Path(self.path).name} if self.path else {}
        if self.line is not None:
            data["line"] = self.line
        if self.key is not None:
            data["key"] = self.key
        return data

    def manifest_error(self) -> str:
        """The manifest's ``error`` text: ``<file name>:<line>: <what is wrong>`` (no machine paths)."""
        where = self.where()
        return f"{where}: {self.reason}" if where else self.reason

    def for_entry(self, *, clip_id: str | None, source_id: str | None) -> MetadataError:
        """A copy of this error naming the clip (and source) it fails."""
        return MetadataError(self.reason, path=self.path, line=self.line, key=self.key,
                             clip_id=clip_id, source_id=source_id)


def fallback_entry_id(path: str | Path | None, line: int | None = None, key: str | None = None,
                      repeat: int = 1) -> str:
    """A stable id for an entry whose clip id cannot be derived: file name plus line or key
    (plus ``-<repeat>`` for the second, third... entry at the same place)."""
    name = Path(path).name if path is not None else "metadata"
    suffix = f"-L{line}" if line is not None else (f"-{key}" if key is not None else "")
    return safe_id(f"{name}{suffix}" + (f"-{repeat}" if repeat > 1 else ""))


def dedupe_entry_ids(records: Iterable[ClipRecord], errors: list[MetadataError]) -> None:
    """Make the errors' entry ids unique among themselves and the records' clip ids, in place.

    Records keep their ids. An error whose clip id is taken (by a record or an earlier
    error) loses it and falls back to its file and line or key; a fallback taken too
    (several entries at one place) gets a ``-2``, ``-3``... suffix.
    """
    taken = {record.clip_id for record in records}
    for error in errors:
        if error.clip_id in taken:
            error.clip_id = None
        while error.entry_id in taken:
            error.repeat += 1
        taken.add(error.entry_id)


def report(error: MetadataError, errors: list[MetadataError] | None) -> None:
    """Record an entry error in ``errors`` and go on, or raise it when ``errors`` is ``None`` (strict)."""
    if errors is None:
        raise error from None
    errors.append(error)
