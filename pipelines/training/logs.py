"""Training logs: an append-only CSV per run that a resume trims back to its checkpoint."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from aniportrait.storage import write_local_atomic


class CsvLog:
    """Append-only CSV; on resume rows after the checkpoint's step are dropped (they get redone)."""

    def __init__(self, path: Path, fields: tuple[str, ...] | list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, list(fields)
        rows = self.read(path) if keep_until is not None and path.exists() else []
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= (keep_until or 0))
        write_local_atomic(path, buffer.getvalue().encode())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.fields, extrasaction="ignore").writerow(row)

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
