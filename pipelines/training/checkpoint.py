"""Trainer checkpoints: one layout for every trainer, one ``torch.save`` file per saved step, written atomically.

Files: ``<out>/checkpoints/step-00000100.pt``. A file appears only once complete and on
disk (written to a temporary name, flushed and ``fsync``-ed, ``os.replace``-d, then the
folder ``fsync``-ed), and ``--resume`` picks the newest one that is a complete archive,
skipping (with a warning) one a crash or a full disk left damaged. Files hold plain types
and tensors only and load with ``torch.load(weights_only=True)``.

Layout (format version 2, :class:`TrainerCheckpoint`), the same for every trainer:

- ``format_version``: 2;
- ``kind``: what was trained: ``audio2mesh``, ``audio2pose``, ``lmk2video-stage1`` or
  ``lmk2video-stage2``;
- ``step``: optimizer steps done;
- ``models``: ``{name: state dict}`` of the trained modules: ``{"audio2mesh": ...}`` or
  ``{"audio2pose": ...}`` (the head, no wav2vec2); stage 1 ``pose_guider``, ``reference_unet``,
  ``denoising_unet``; stage 2 ``motion_module`` (the motion-module tensors of the denoising
  UNet). The names are those of :data:`models.official_weights.OFFICIAL_FILES` where one exists;
- ``optimizer``: the optimizer's state dict;
- ``stream``: every rank's stream position (``{"epoch", "samples"}``), in rank order;
- ``rng``: every rank's torch rng state (``{"torch"[, "cuda"]}``), in rank order;
- ``config``: ``{"train": the trainer config, "model": the model config, "inference": the
  conventions inference follows with these weights}`` as dicts (``inference``: Audio2Pose
  ``{"pose_rotation_scale": 1.0, "pose_smooth": W}``, Lmk2Video ``{"pose_feed": "unit"}``,
  see :mod:`pipelines.inference.conventions`; checkpoints written before it existed lack it
  and inference assumes those values for them);
- ``extra``: what else one trainer needs to resume (Lmk2Video: ``{"scaler": GradScaler state or None}``).

Older checkpoints: files without ``format_version`` are version 1, the two layouts the
trainers wrote before (Audio2Lmk: ``kind, step, model, optimizer, stream, rng, config``;
Lmk2Video: ``kind="lmk2video", stage, train_config, model_config, positions, step, modules,
optimizer, scaler``). :meth:`TrainerCheckpoint.from_dict` converts both, so they resume and
load at inference as before. A version above 2 fails, naming the version and what to do.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from aniportrait.storage import local_atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 2
_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_V1_AUDIO_KINDS = ("audio2mesh", "audio2pose")
_V1_AUDIO_KEYS = {"kind", "step", "model", "optimizer", "stream", "rng", "config"}
_V1_LMK2VIDEO_KEYS = {"kind", "stage", "train_config", "model_config", "positions", "step", "modules", "optimizer",
                      "scaler"}


@dataclass(slots=True)
class TrainerCheckpoint:
    """One saved step of a trainer (the layout in this module's docstring)."""

    kind: str
    step: int
    models: dict[str, dict[str, Any]]
    optimizer: dict[str, Any]
    stream: list[dict[str, int]]
    rng: list[dict[str, Any]]
    config: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The file's contents (tensors are not copied)."""
        return {"format_version": FORMAT_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> TrainerCheckpoint:
        """A checkpoint of any known format version (``source`` names it in errors)."""
        version = data.get("format_version", 1)
        if version == 1:
            return _from_version_1(data, source)
        if version != FORMAT_VERSION:
            raise ValueError(f"{source} has checkpoint format version {version}, but this code reads versions 1 to "
                             f"{FORMAT_VERSION}: load it with the aniportrait-data version that wrote it (or a newer "
                             f"one), or start a new run in another --out")
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"{source} is a damaged version-{version} checkpoint: it lacks {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _from_version_1(data: Mapping[str, Any], source: str) -> TrainerCheckpoint:
    """The two layouts written before ``format_version`` existed, converted."""
    kind = data.get("kind")
    if kind in _V1_AUDIO_KINDS and _V1_AUDIO_KEYS <= data.keys():
        return TrainerCheckpoint(kind=kind, step=int(data["step"]), models={kind: data["model"]},
                                 optimizer=data["optimizer"], stream=list(data["stream"]), rng=list(data["rng"]),
                                 config=dict(data["config"]))
    if kind == "lmk2video" and _V1_LMK2VIDEO_KEYS <= data.keys():
        return TrainerCheckpoint(kind=f"lmk2video-stage{data['stage']}", step=int(data["step"]),
                                 models=dict(data["modules"]), optimizer=data["optimizer"],
                                 stream=list(data["positions"]), rng=[],
                                 config={"train": data["train_config"], "model": data["model_config"]},
                                 extra={"scaler": data["scaler"]})
    raise ValueError(f"{source} is not a trainer checkpoint: it has no format_version and is in neither "
                     f"version-1 layout (kind {kind!r}, keys {', '.join(sorted(map(str, data)))})")


def is_trainer_checkpoint(data: Any) -> bool:
    """Whether loaded file contents are a trainer checkpoint (of any version) rather than a bare
    state dict such as an official ``audio2mesh.pt`` (whose keys are tensor names)."""
    return isinstance(data, Mapping) and ("format_version" in data or "kind" in data)


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes under a trainer's output folder."""
    return Path(out_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int:
    """The step of a checkpoint file, from its name."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named as a checkpoint (step-<8 digits>.pt)")
    return int(match.group(1))


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


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Any:
    """The contents of a file written by :func:`save_checkpoint` (tensors on ``map_location``)."""
    import torch

    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> TrainerCheckpoint:
    """The trainer checkpoint at ``path``, in the current layout whatever its format version."""
    data = load_checkpoint(path, map_location)
    if not is_trainer_checkpoint(data):
        raise ValueError(f"{path} is not a trainer checkpoint (a bare state dict?)")
    return TrainerCheckpoint.from_dict(data, str(path))


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
