"""The per-clip work area: stage outputs and done markers that make a build resumable.

Layout: ``<work>/sources/<source_id>.<ext>`` for downloads (with ``<source_id>.lock``,
``<source_id>.partial/`` holding an unfinished download that the next try continues,
and ``<source_id>.download.json`` for a failed one) and
``<work>/clips/<clip_id>/<files>`` for each clip's stage outputs, with
``<stage>.done.json`` written last (atomically) holding the stage's settings hash and
the clip's state. A rerun trusts a marker only when its hash matches.

The work area is a local (or shared-filesystem) folder, used in place, or an object
store URI (``s3://bucket/prefix/_work``, any pyarrow or fsspec filesystem). With a URI
the stages still read and write local files (ffmpeg and MediaPipe need paths), in a
node-local scratch copy (:func:`scratch_dir`): a stage's new output files are uploaded
to ``<work>/clips/<clip_id>/`` when it finishes a clip, then its marker, so an uploaded
marker always has its files. Markers are read from the URI (a driver resuming reads
nothing else), and a stage's input files are downloaded when the scratch copy lacks
them (:meth:`WorkArea.input_file`). Source downloads stay in the scratch (once per
node); failed-download markers go to the URI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aniportrait.ids import contained_join
from aniportrait.storage import OutputDir, write_local_atomic

#: Local file -> (inode, size, mtime) when it was last uploaded or downloaded by this
#: process: the scratch files known to equal their copy in the remote work area.
_SYNCED: dict[str, tuple[int, int, int]] = {}


def scratch_dir(uri: str) -> Path:
    """The node-local copy of the remote work area ``uri``: under ``TMPDIR``, keyed by a hash of it."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "aniportrait-work" / key


def default_work_dir(out: str) -> str:
    """``<out>/_work``, for a local path or a URI (kept before its ``?query``)."""
    if "://" not in out:
        return str(Path(out) / "_work")
    base, mark, query = out.partition("?")
    return f"{base.rstrip('/')}/_work{mark}{query}"


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class WorkArea:
    """Paths, files and markers of one work area (a local folder or a URI, see the module docstring).

    ``root`` is the local folder the stages write into: the work area itself, or the
    node's scratch copy of a remote one; ``uri`` is where the work area is (what
    rebuilds it in another process).
    """

    def __init__(self, location: str | Path) -> None:
        text = str(location)
        self.remote: OutputDir | None = OutputDir.from_uri(text) if "://" in text else None
        self.uri = text if self.remote else str(Path(text).resolve())
        self.root = scratch_dir(text) if self.remote else Path(self.uri)

    @property
    def sources_dir(self) -> Path:
        return self.root / "sources"

    def clip_dir(self, clip_id: str) -> Path:
        """The clip's own local folder (created), refusing ids that would escape the work area."""
        path = Path(contained_join(str(self.root / "clips"), clip_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clip_file(self, clip_id: str, name: str) -> Path:
        """Local path of one of the clip's files (to write, or to read a file this stage wrote)."""
        return Path(contained_join(str(self.clip_dir(clip_id)), name))

    def input_file(self, clip_id: str, name: str) -> Path:
        """Local path of a file an earlier stage wrote, downloaded first when the scratch copy lacks it."""
        path = self.clip_file(clip_id, name)
        if self.remote is not None and not self._synced(path):
            self.remote.download_file(contained_join("clips", clip_id, name), path)
            _SYNCED[str(path)] = _stamp(path)
        return path

    def read_bytes(self, clip_id: str, name: str) -> bytes:
        """The bytes of one of the clip's files, wherever the work area is."""
        if self.remote is None:
            return self.clip_file(clip_id, name).read_bytes()
        return self.remote.read_bytes(contained_join("clips", clip_id, name))

    def sizes(self, clip_id: str) -> dict[str, int]:
        """Size of each of the clip's files, by name (one listing)."""
        if self.remote is None:
            return {p.name: p.stat().st_size for p in self.clip_dir(clip_id).iterdir() if p.is_file()}
        return self.remote.sizes(contained_join("clips", clip_id))

    def clear_temporaries(self, clip_id: str) -> None:
        """Delete temporary files a killed run left in the clip's (local) folder."""
        for path in self.clip_dir(clip_id).glob(".*.tmp-*"):
            path.unlink(missing_ok=True)

    def drop_local(self, clip_id: str) -> None:
        """Delete the clip's scratch copy of a remote work area (a local one is left alone).

        Before a clip's stages run, what the scratch holds of it is untrusted (left by a
        killed actor); after them, all of it is uploaded.
        """
        if self.remote is None:
            return
        folder = self.clip_dir(clip_id)
        for path in folder.iterdir():
            _SYNCED.pop(str(path), None)
        shutil.rmtree(folder, ignore_errors=True)

    def read_marker(self, key: str, stage: str, stage_hash: str, *, kind: str = "clips") -> dict[str, Any] | None:
        """The marker payload if ``stage`` finished for ``key`` with the same settings."""
        name = self._marker_name(key, stage, kind)
        try:
            if self.remote is None:
                text = (self.root / name).read_bytes()
            else:
                text = self.remote.read_bytes(name)
            data = json.loads(text)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data["payload"] if data.get("stage_hash") == stage_hash else None

    def write_marker(self, key: str, stage: str, stage_hash: str, payload: dict[str, Any], *,
                     kind: str = "clips", files: Iterable[str] = ()) -> None:
        """Write the marker; into a remote work area, first upload those of the clip's ``files``
        this process wrote and did not upload yet (the others are there already)."""
        body = json.dumps({"stage_hash": stage_hash, "payload": payload}, sort_keys=True).encode()
        name = self._marker_name(key, stage, kind)
        if self.remote is None:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_local_atomic(path, body)
            return
        for file_name in sorted(set(files)):
            path = self.clip_file(key, file_name)
            if path.exists() and not self._synced(path):
                self.remote.upload_file(path, contained_join("clips", key, file_name))
                _SYNCED[str(path)] = _stamp(path)
        self.remote.write_bytes(name, body)

    def delete_marker(self, key: str, stage: str, *, kind: str = "clips") -> None:
        """Forget that ``stage`` finished for ``key`` (it runs again)."""
        name = self._marker_name(key, stage, kind)
        if self.remote is None:
            (self.root / name).unlink(missing_ok=True)
        else:
            self.remote.delete(name)

    @staticmethod
    def _marker_name(key: str, stage: str, kind: str) -> str:
        """The marker's path relative to the work area."""
        if kind == "clips":
            return contained_join("clips", key, f"{stage}.done.json")
        return contained_join("sources", f"{key}.{stage}.json")

    @staticmethod
    def _synced(path: Path) -> bool:
        """Whether the local ``path`` is what this process last uploaded or downloaded."""
        known = _SYNCED.get(str(path))
        return known is not None and os.path.exists(path) and _stamp(path) == known
