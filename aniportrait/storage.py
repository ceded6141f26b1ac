"""Atomic file output on local disks and on any pyarrow filesystem (``s3://``, ``gs://`` ...).

Nothing is ever visible under its final name before it is complete: data goes to a
temporary name next to the target, then is moved into place.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow.fs as pafs


@dataclass(frozen=True)
class OutputDir:
    """A directory on a pyarrow filesystem, given as a local path or a URI."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def from_uri(cls, uri: str | Path) -> OutputDir:
        """Local paths become absolute; URIs go through ``pyarrow.fs.FileSystem.from_uri``."""
        text = str(uri)
        if "://" not in text:
            return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
        fs, root = pafs.FileSystem.from_uri(text)
        return cls(fs, root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def makedirs(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read()

    def list_names(self, suffix: str = "") -> list[str]:
        """Sorted file names directly under the directory, ending with ``suffix``."""
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=False)
        infos = self.fs.get_file_info(selector)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))

    @contextmanager
    def atomic_writer(self, name: str) -> Iterator[IO[bytes]]:
        """Open ``name`` for writing; it appears only when the block exits without error."""
        tmp = self.path(f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open_output_stream(tmp) as stream:
                yield stream
            self.fs.move(tmp, self.path(name))
        except BaseException:
            _delete_quietly(self.fs, tmp)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.atomic_writer(name) as stream:
            stream.write(data)

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left behind by a killed writer."""
        for name in self.list_names():
            if name.startswith(".") and ".tmp-" in name:
                _delete_quietly(self.fs, self.path(name))


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


@contextmanager
def local_atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write (e.g. by ffmpeg); on success it
    is renamed to ``path``, on error removed, so no partial file is ever visible."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_local_atomic(path: str | Path, data: bytes) -> None:
    """Write a local file atomically (temp name in the same directory, then rename)."""
    with local_atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
