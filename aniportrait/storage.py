"""Atomic file output on local disks and on any pyarrow or fsspec filesystem (``s3://``, ``gs://`` ...).

Nothing is ever visible under its final name before it is complete. On a local disk
(and HDFS) data goes to a temporary name next to the target, then is renamed. On an
object store a rename is a copy plus a delete, and pyarrow's output streams cannot be
aborted (closing one after an error stores the partial object), so data is first
spooled to a local temporary file (under ``TMPDIR``) and then uploaded to the final
key in one call: the store creates the object only when that upload completes (one
PUT, or a multipart upload that is completed last), and a failed write leaves nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

#: Filesystems with an atomic rename: write a temporary name, then move it into place.
RENAMING_FILESYSTEMS = frozenset({"local", "hdfs"})
#: URI schemes of pyarrow's filesystem type names, for messages.
_SCHEMES = {"s3": "s3", "gcs": "gs", "abfs": "abfs", "hdfs": "hdfs"}


class OutputError(OSError):
    """Reading or writing the output location failed (network, credentials, missing bucket)."""


@dataclass(frozen=True)
class OutputDir:
    """A directory on a pyarrow filesystem, given as a local path or a URI.

    Any URI ``pyarrow.fs.FileSystem.from_uri`` knows works (``s3://``, ``gs://``,
    ``abfs://``, ``hdfs://``, ``file://``); other schemes go through fsspec
    (``memory://``, or ``az://`` with adlfs installed, for example).

    S3: ``s3://bucket/prefix``. Credentials and region come from the standard AWS places
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
    ``~/.aws/credentials`` and ``AWS_PROFILE``, an instance or pod role). An
    S3-compatible server (MinIO, Ceph, R2) is named by ``AWS_ENDPOINT_URL=http://host:9000``
    or in the URI: ``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``. The
    bucket must exist. On a Ray cluster these settings must hold on every node, since
    the shards are written by Ray workers.
    """

    fs: pafs.FileSystem
    root: str

    @classmethod
    def from_uri(cls, uri: str | Path) -> OutputDir:
        """Local paths become absolute; URIs go through pyarrow, then fsspec."""
        text = str(uri)
        if "://" not in text:
            return cls(pafs.LocalFileSystem(), str(Path(text).expanduser().resolve()))
        try:
            fs, root = pafs.FileSystem.from_uri(text)
        except pa.ArrowInvalid:  # a scheme pyarrow does not know
            fs, root = _fsspec_filesystem(text)
        return cls(fs, root.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def renames_atomically(self) -> bool:
        return self.fs.type_name in RENAMING_FILESYSTEMS

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def location(self, name: str = "") -> str:
        """``name`` (or the directory) as a user would write it: a path or a URI."""
        path = self.path(name) if name else self.root
        if self.is_local:
            return path
        if isinstance(self.fs, pafs.PyFileSystem):
            return self.fs.handler.fs.unstrip_protocol(path)
        return f"{_SCHEMES.get(self.fs.type_name, self.fs.type_name)}://{path}"

    def makedirs(self) -> None:
        with self._speaking("create", ""):
            self.fs.create_dir(self.root, recursive=True)

    def exists(self, name: str) -> bool:
        with self._speaking("read", name):
            return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes:
        """The bytes of ``name``; ``FileNotFoundError`` when it is not there."""
        with self._speaking("read", name), self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read()

    def list_names(self, suffix: str = "") -> list[str]:
        """Sorted file names directly under the directory, ending with ``suffix``."""
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=False)
        with self._speaking("list", ""):
            infos = self.fs.get_file_info(selector)
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))

    @contextmanager
    def atomic_writer(self, name: str) -> Iterator[IO[bytes]]:
        """Open ``name`` for writing; it appears only when the block exits without error."""
        if not self.renames_atomically:
            with tempfile.NamedTemporaryFile(prefix=f".{name.rpartition('/')[2]}.", suffix=".upload") as spool:
                yield spool
                spool.flush()
                with self._speaking("upload", name):
                    pafs.copy_files(spool.name, self.path(name), source_filesystem=pafs.LocalFileSystem(),
                                    destination_filesystem=self.fs)
            return
        folder, _, base = name.rpartition("/")
        tmp = self.path(f"{folder}/" * bool(folder) + f".{base}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        if folder:  # a name in a subfolder (the work area's clips/<id>/...)
            self.fs.create_dir(self.path(folder), recursive=True)
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

    def upload_file(self, local: str | Path, name: str) -> None:
        """Copy the complete local file ``local`` to ``name``; it appears only when complete."""
        if self.renames_atomically:
            with self.atomic_writer(name) as stream, open(local, "rb") as source:
                shutil.copyfileobj(source, stream, 1 << 20)
            return
        with self._speaking("upload", name):  # already a whole local file: one upload, no spool
            pafs.copy_files(str(local), self.path(name), source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)

    def download_file(self, name: str, local: str | Path) -> None:
        """Copy ``name`` to the local file ``local`` (atomically); ``FileNotFoundError`` when absent."""
        with self._speaking("download", name), local_atomic_path(local) as tmp:
            pafs.copy_files(self.path(name), str(tmp), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())

    def delete(self, name: str) -> None:
        """Delete ``name`` if it is there."""
        with self._speaking("delete", name):
            try:
                self.fs.delete_file(self.path(name))
            except FileNotFoundError:
                pass

    def sizes(self, folder: str) -> dict[str, int]:
        """Size of each file directly under ``folder`` (relative to the directory), by name."""
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True, recursive=False)
        with self._speaking("list", folder):
            infos = self.fs.get_file_info(selector)
        return {i.base_name: i.size for i in infos if i.type == pafs.FileType.File}

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files left behind by a killed writer."""
        for name in self.list_names():
            if name.startswith(".") and ".tmp-" in name:
                _delete_quietly(self.fs, self.path(name))

    @contextmanager
    def _speaking(self, action: str, name: str) -> Iterator[None]:
        """Turn a filesystem error into an :class:`OutputError` naming the location."""
        try:
            yield
        except (FileNotFoundError, OutputError):
            raise
        except OSError as exc:
            raise OutputError(f"cannot {action} {self.location(name)}: {exc}") from exc


def _fsspec_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """``uri`` opened with fsspec and wrapped as a pyarrow filesystem."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"cannot open {uri}: neither pyarrow nor fsspec knows this location ({exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


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
