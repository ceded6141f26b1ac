"""The per-clip work area: stage outputs and done markers that make a build resumable.

Layout: ``<work>/sources/<source_id>.<ext>`` for downloads and
``<work>/clips/<clip_id>/<files>`` for each clip's stage outputs, with
``<stage>.done.json`` written last (atomically) holding the stage's settings hash and
the clip's state. A rerun trusts a marker only when its hash matches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aniportrait.ids import contained_join
from aniportrait.storage import write_local_atomic


class WorkArea:
    """Paths and markers under one local (or shared-filesystem) work directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    @property
    def sources_dir(self) -> Path:
        return self.root / "sources"

    def clip_dir(self, clip_id: str) -> Path:
        """The clip's own folder (created), refusing ids that would escape the work area."""
        path = Path(contained_join(str(self.root / "clips"), clip_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clip_file(self, clip_id: str, name: str) -> Path:
        return Path(contained_join(str(self.clip_dir(clip_id)), name))

    def clear_temporaries(self, clip_id: str) -> None:
        """Delete temporary files a killed run left in the clip's folder."""
        for path in self.clip_dir(clip_id).glob(".*.tmp-*"):
            path.unlink(missing_ok=True)

    def marker_path(self, key: str, stage: str, *, kind: str = "clips") -> Path:
        folder = self.clip_dir(key) if kind == "clips" else self.sources_dir
        if kind != "clips":
            folder.mkdir(parents=True, exist_ok=True)
            return Path(contained_join(str(folder), f"{key}.{stage}.json"))
        return Path(contained_join(str(folder), f"{stage}.done.json"))

    def read_marker(self, key: str, stage: str, stage_hash: str, *, kind: str = "clips") -> dict[str, Any] | None:
        """The marker payload if ``stage`` finished for ``key`` with the same settings."""
        path = self.marker_path(key, stage, kind=kind)
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data["payload"] if data.get("stage_hash") == stage_hash else None

    def write_marker(self, key: str, stage: str, stage_hash: str, payload: dict[str, Any], *,
                     kind: str = "clips") -> None:
        body = json.dumps({"stage_hash": stage_hash, "payload": payload}, sort_keys=True)
        write_local_atomic(self.marker_path(key, stage, kind=kind), body.encode())
