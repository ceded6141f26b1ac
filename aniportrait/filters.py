"""Curation rules: plain thresholds on a clip's quality scores (``face_px>=150``).

A rule names one numeric score of the registry (:mod:`aniportrait.scores`, by name or
alias), a comparison and a number. Rules come from ``--filter`` (comma separated) or a
config file; a clip that breaks one is kept as a manifest row with reason
``filtered:<rule>`` (the first rule it breaks, in the order given). A score the clip does
not have (no face, no audio) breaks the rule: a filter on sync keeps only clips whose
sync could be measured.

Rules are read against a registry: :data:`~aniportrait.scores.SCORES` by default, the
snapshot the filter stage carries in a Ray worker.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aniportrait.schema import ClipInfo
from aniportrait.scores import SCORES, ScoreRegistry

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

    def passes(self, values: Mapping[str, Any]) -> bool:
        """True when the clip's score (``values``: scores by name) meets the rule; a missing or NaN score does not."""
        value = values.get(self.score)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return _OPS[self.op](float(value), self.value)


def parse_rule(text: str, scores: ScoreRegistry = SCORES) -> Rule:
    """One rule from text such as ``face_px >= 150``."""
    match = _RULE.match(text)
    if match is None:
        raise RuleError(f"cannot read filter rule {text!r}: write it as <score><op><number>, e.g. face_px>=150 "
                        f"(ops: {' '.join(_OPS)})")
    name, op, value = match.groups()
    known = ", ".join(sorted(n for s in scores if s.numeric for n in (s.name, *s.aliases)))
    try:
        score = scores.resolve(name)
    except KeyError:
        raise RuleError(f"unknown score {name!r} in filter rule {text!r}; known scores: {known}") from None
    if not score.numeric:
        raise RuleError(f"score {name!r} in filter rule {text!r} is a {score.type}, not a number; "
                        f"known scores: {known}")
    return Rule(score.name, op, float(value))


def parse_rules(texts: str | Iterable[str], scores: ScoreRegistry = SCORES) -> tuple[Rule, ...]:
    """Rules from a comma-separated string or a list of rule strings (empty parts ignored)."""
    parts = texts.split(",") if isinstance(texts, str) else [p for t in texts for p in t.split(",")]
    return tuple(parse_rule(p, scores) for p in parts if p.strip())


def score_values(info: ClipInfo, scores: ScoreRegistry = SCORES) -> dict[str, Any]:
    """The clip's numeric scores by name, the derived ones (``sync_offset_abs`` ...) included."""
    return {score.name: score.value(info) for score in scores if score.numeric}


def first_broken(rules: Iterable[Rule], info: ClipInfo, scores: ScoreRegistry = SCORES) -> Rule | None:
    """The first rule the clip breaks, or ``None`` when it passes them all."""
    values = score_values(info, scores)
    return next((rule for rule in rules if not rule.passes(values)), None)


def scene_parts(frames: int, cuts: Iterable[int], min_frames: int) -> list[tuple[int, int]]:
    """The shots between scene cuts as ``(first, end)`` frame ranges, dropping those under ``min_frames``."""
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < frames), frames]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b - a >= min_frames]
