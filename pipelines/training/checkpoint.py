"""Trainer checkpoints: one ``torch.save`` file per saved step, written atomically.

Layout: ``<out>/checkpoints/step-00000100.pt``. A file appears only once complete and on
disk (written to a temporary name, flushed and ``fsync``-ed, ``os.replace``-d, then the
folder ``fsync``-ed), and ``--resume`` picks the newest one that is a complete archive,
skipping (with a warning) one a crash or a full disk left damaged. Files hold plain types
and tensors only (model and optimizer state dicts, step, stream positions, rng states,
configs as dicts) and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from aniportrait.storage import local_atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8,})\.pt$")


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes under a trainer's output folder."""
    return Path(out_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to ``path`` atomically and durably (its folder is
    created): the file is on disk before it takes its name, and the name before this returns."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with local_atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path


def local_or_hub(value: str | None) -> str | None:
    """A weights option made independent of the working folder: an existing local path
    becomes absolute, anything else (a hub id, ``None``) is returned as it is."""
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` (tensors on ``map_location``)."""
    import torch

    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """The checkpoints under ``out_dir``, oldest step first."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint of the highest step under ``out_dir`` that is a complete archive, or
    ``None``; a newer damaged one (cut short by a crash) is skipped with a warning."""
    for path in reversed(list_checkpoints(out_dir)):
        try:
            with zipfile.ZipFile(path) as archive:  # reads the central directory, written last
                if not any(name.endswith("/data.pkl") for name in archive.namelist()):
                    raise zipfile.BadZipFile("no data.pkl in it")
        except (OSError, zipfile.BadZipFile) as exc:
            log.warning("checkpoint %s is damaged (%s): skipping it for an older one", path, exc)
            continue
        return path
    return None


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; return the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    old = list_checkpoints(out_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old
