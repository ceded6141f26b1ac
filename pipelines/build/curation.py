"""Curation settings: scene-cut policy, filter rules and sync correction, from flags or a file.

A curation file is TOML with the same names as the flags::

    # curation.toml
    filter = ["face_px >= 150", "sync_conf >= 3"]
    scene_cuts = "split"      # split | reject | keep
    min_part_s = 1.0          # sub-clips shorter than this are dropped
    fix_sync = false          # shift the audio by the measured offset
    scene_threshold = 27.0    # PySceneDetect ContentDetector threshold
    min_frames = 30           # shorter clips are filtered out: too_short
    max_second_face_rate = 0.2  # more sampled frames with a second face: multiple_faces

Flags given on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aniportrait.filters import parse_rules

SCENE_POLICIES = ("split", "reject", "keep")


@dataclass(frozen=True)
class CurationSettings:
    """What the quality, filter and sync stages do (all of it shapes the output bytes)."""

    filter: tuple[str, ...] = ()
    scene_cuts: str = "split"
    min_part_s: float = 1.0
    fix_sync: bool = False
    scene_threshold: float = 27.0
    #: Clips with fewer frames are filtered out (``too_short``); the official preprocessing's ``min_clip_length``.
    min_frames: int = 30
    #: Clips with a second face (at least half the main face's height) in more than this share of the
    #: sampled frames are filtered out (``multiple_faces``); 1.0 keeps them all.
    max_second_face_rate: float = 0.2

    def __post_init__(self) -> None:
        if self.scene_cuts not in SCENE_POLICIES:
            raise ValueError(f"scene_cuts must be one of {', '.join(SCENE_POLICIES)}, got {self.scene_cuts!r}")
        if self.min_part_s <= 0:
            raise ValueError(f"min_part_s must be positive, got {self.min_part_s}")
        if self.scene_threshold <= 0:
            raise ValueError(f"scene_threshold must be positive, got {self.scene_threshold}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
        if not 0.0 <= self.max_second_face_rate <= 1.0:
            raise ValueError(f"max_second_face_rate must be within 0..1, got {self.max_second_face_rate}")
        # Canonical spelling, so "face_px >= 150" and "face_px_median>=150" hash alike. The
        # filter stage reads the rules again against the build's score snapshot.
        object.__setattr__(self, "filter", tuple(rule.text for rule in parse_rules(self.filter)))


def load_curation(path: str | Path | None = None, **overrides: Any) -> CurationSettings:
    """Settings from a TOML file (if given) with ``overrides`` (non-``None`` values) on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read the curation file {path}: {exc}") from exc
        known = {f.name for f in dataclasses.fields(CurationSettings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)} in {path}; known: {', '.join(sorted(known))}")
        if isinstance(values.get("filter"), str):
            values["filter"] = [values["filter"]]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["filter"] = tuple(values.get("filter", ()))
    return CurationSettings(**values)
