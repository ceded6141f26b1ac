"""Curation rules: plain thresholds on a clip's quality scores (``face_px>=150``).

A rule names one score, a comparison and a number. Rules come from ``--filter`` (comma
separated) or a config file; a clip that breaks one is kept as a manifest row with
reason ``filtered:<rule>`` (the first rule it breaks, in the order given). A score the
clip does not have (no face, no audio) breaks the rule: a filter on sync keeps only
clips whose sync could be measured.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Scores a rule may name (manifest columns), with what they mean.
SCORES: dict[str, str] = {
    "face_rate": "share of frames with a face (0..1)",
    "face_px_median": "median face height in output pixels",
    "face_px_min": "smallest face height in output pixels",
    "yaw_range_deg": "head yaw range over the clip (degrees, p95 - p5)",
    "pitch_range_deg": "head pitch range (degrees, p95 - p5)",
    "roll_range_deg": "head roll range (degrees, p95 - p5)",
    "jitter": "median frame-to-frame landmark motion with head pose removed",
    "sharpness": "median variance of the Laplacian on the face box",
    "brightness": "mean grey level of the face box (0..255)",
    "sync_offset": "audio lag behind the lips in frames (signed)",
    "sync_offset_abs": "absolute audio/lip offset in frames",
    "sync_conf": "confidence of the sync estimate (peak over median, robust spread)",
    "sync_score0": "audio/lip correlation at offset 0",
    "duration_s": "clip duration in seconds",
    "scene_cut_count": "scene cuts inside the clip",
    "faces_max": "most faces found on one sampled frame (every 10th)",
    "second_face_rate": "share of sampled frames with a second face at least half the main face's height",
    "track_jumps": "jumps of the tracked face between frames far beyond head motion (identity switches)",
}
#: Short names accepted in rules.
ALIASES = {"face_px": "face_px_median", "yaw": "yaw_range_deg", "pitch": "pitch_range_deg",
           "roll": "roll_range_deg", "sync": "sync_conf"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq, "!=": operator.ne,
}
_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class RuleError(ValueError):
    """A filter rule that cannot be read (the message shows the accepted form)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """``score op value``; ``text`` is its canonical spelling (``face_px_median>=150``)."""

    score: str
    op: str
    value: float

    @property
    def text(self) -> str:
        return f"{self.score}{self.op}{self.value:g}"

    def passes(self, scores: Mapping[str, Any]) -> bool:
        """True when the clip's score meets the rule; a missing or NaN score does not."""
        value = scores.get(self.score)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return _OPS[self.op](float(value), self.value)


def parse_rule(text: str) -> Rule:
    """One rule from text such as ``face_px >= 150``."""
    match = _RULE.match(text)
    if match is None:
        raise RuleError(f"cannot read filter rule {text!r}: write it as <score><op><number>, e.g. face_px>=150 "
                        f"(ops: {' '.join(_OPS)})")
    name, op, value = match.groups()
    score = ALIASES.get(name, name)
    if score not in SCORES:
        known = ", ".join(sorted(set(SCORES) | set(ALIASES)))
        raise RuleError(f"unknown score {name!r} in filter rule {text!r}; known scores: {known}")
    return Rule(score, op, float(value))


def parse_rules(texts: str | Iterable[str]) -> tuple[Rule, ...]:
    """Rules from a comma-separated string or a list of rule strings (empty parts ignored)."""
    parts = texts.split(",") if isinstance(texts, str) else [p for t in texts for p in t.split(",")]
    return tuple(parse_rule(p) for p in parts if p.strip())


def derived_scores(info: Mapping[str, Any]) -> dict[str, Any]:
    """The clip's scores by rule name, including the derived ones (``sync_offset_abs`` ...)."""
    scores = {name: info.get(name) for name in SCORES}
    offset = info.get("sync_offset")
    scores["sync_offset_abs"] = None if offset is None else abs(offset)
    scores["scene_cut_count"] = len(info.get("scene_cuts") or ())
    return scores


def first_broken(rules: Iterable[Rule], info: Mapping[str, Any]) -> Rule | None:
    """The first rule the clip breaks, or ``None`` when it passes them all."""
    scores = derived_scores(info)
    return next((rule for rule in rules if not rule.passes(scores)), None)


def scene_parts(frames: int, cuts: Iterable[int], min_frames: int) -> list[tuple[int, int]]:
    """The shots between scene cuts as ``(first, end)`` frame ranges, dropping those under ``min_frames``."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < frames), frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b - a >= min_frames]
