"""The score registry: every per-clip quality score, declared once.

A :class:`Score` says what a score is (name, Arrow type of its manifest column, one-line
meaning, unit, the short names filter rules accept), how the dataset card plots it
(:class:`Histogram` or none) and how it is computed. Everything that lists scores reads
the registry (:data:`SCORES`): the manifest's score columns and rows
(:mod:`aniportrait.manifest`), the names filter rules may use and their aliases
(:mod:`aniportrait.filters`), ``aniportrait-data stats``, the dataset card's plots and
score table, and ``aniportrait-data scores``.

Three kinds of score:

- built in: a fact a stage records on :class:`~aniportrait.schema.ClipInfo` under the
  score's name (the face stage's :class:`~aniportrait.quality.FrameScores`, the quality
  stage's :func:`~aniportrait.quality.clip_quality`); ``computed_by`` says where;
- derived: read off other facts when a rule asks (``sync_offset_abs``,
  ``scene_cut_count``); no manifest column;
- added: ``register(Score(..., compute=fn))``. The build's quality stage calls
  ``fn(ScoreInput)`` on every clip it scores (after the built-in scores) and stores the
  value in ``ClipInfo.scores``, the shard sample's ``json`` and a manifest column after
  the built-in score columns. Bump ``version`` when ``fn`` changes: it is part of the
  quality stage's settings, so cached clips are scored again.

Ray workers are other processes, with their own registry. A build takes a snapshot of
the registry when it makes its stages (:func:`pipelines.build.run.score_snapshot`); the
quality and filter stages carry it to their workers, pickled with them, and the added
scores' compute functions travel by value (:func:`pipelines.runtime.by_value`), so a
score registered in the driver (a test, a notebook) is computed in every worker without
its module being importable there. A score registered in this module exists in every
process; one registered elsewhere is known to the tools (``stats``, ``card``) only in the
process that registered it. :func:`registered` registers scores for a ``with`` block only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from aniportrait.schema import ClipInfo

#: The card figures a score's histogram can be drawn in (one PNG each), with their titles.
CARD_FIGURES: dict[str, str] = {
    "durations": "Clip durations",
    "face_sizes": "Face sizes",
    "sync": "Audio-video sync",
    "quality": "Per-clip quality measures",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_float(value: float | None) -> float | None:
    """A float as manifests and shards store it: rounded to 6 decimals, NaN and inf as ``None``."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """What an added score's compute function sees of one clip.

    The face stage's arrays (``lmks`` (T, 478, 3) x, y normalised to the frame, NaN rows
    without a face; ``lmks3d`` (T, 468, 3) canonical mesh; ``pose6d`` (T, 6) Euler xyz
    degrees and translation; ``blendshapes`` (T, 52); ``has_face`` (T,) bool), the audio
    (mono float in -1..1 at ``sample_rate`` Hz, ``None`` for a clip without audio) and the
    facts measured so far, built-in scores included (``info.width``, ``info.fps``,
    ``info.face_px_median`` ...). Read only.
    """

    lmks: np.ndarray
    lmks3d: np.ndarray
    pose6d: np.ndarray
    blendshapes: np.ndarray
    has_face: np.ndarray
    audio: np.ndarray | None
    sample_rate: int
    info: ClipInfo


#: An added score's compute function: its value for one clip (``None`` or NaN: not measured).
ComputeFn = Callable[[ScoreInput], float | int | None]


@dataclass(frozen=True, slots=True)
class Histogram:
    """A score's histogram in the dataset card, over the kept clips.

    ``figure``: the card figure (:data:`CARD_FIGURES`) it is a panel of; ``bins``: the bin
    count (``None``: about the square root of the clip count, 5 to 40).
    """

    figure: str = "quality"
    bins: int | None = None

    def __post_init__(self) -> None:
        if self.figure not in CARD_FIGURES:
            raise ValueError(f"unknown card figure {self.figure!r}; choose one of {', '.join(CARD_FIGURES)}")
        if self.bins is not None and self.bins < 1:
            raise ValueError(f"a histogram needs at least 1 bin, got {self.bins}")


@dataclass(frozen=True, slots=True)
class Score:
    """One per-clip score (see the module docstring for the three kinds).

    ``type`` is the Arrow type of its manifest column; rules can name it (or one of its
    ``aliases``) when it is a number. ``column``: whether the manifest has a column for it
    among the score columns (``duration_s`` has its own among the clip's facts; a derived
    score has none). ``plot``: how the card shows it (``None``: not plotted).
    ``computed_by``: where a built-in score is computed, or what a derived one is read
    from; ``compute``: an added score's function; ``derive``: a derived score's function of
    the clip's facts. ``version``: bump it when ``compute`` changes.
    """

    name: str
    type: pa.DataType
    meaning: str
    unit: str = ""
    aliases: tuple[str, ...] = ()
    plot: Histogram | None = Histogram()
    column: bool = True
    computed_by: str = ""
    compute: ComputeFn | None = None
    derive: Callable[[ClipInfo], Any] | None = None
    version: int = 1

    def __post_init__(self) -> None:
        for name in (self.name, *self.aliases):
            if not _NAME.match(name):
                raise ValueError(f"score name {name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
        if not self.meaning or "\n" in self.meaning:
            raise ValueError(f"score {self.name!r}: give its meaning in one line")
        if self.compute is not None and self.derive is not None:
            raise ValueError(f"score {self.name!r}: give a compute or a derive function, not both")
        if self.derive is not None and (self.column or self.plot is not None):
            raise ValueError(f"score {self.name!r} is derived: it has no manifest column (column=False, plot=None)")
        if self.compute is not None and not (self.numeric and self.column):
            raise ValueError(f"score {self.name!r}: a computed score is a number with a manifest column")
        if self.plot is not None and not self.numeric:
            raise ValueError(f"score {self.name!r}: only a number can be plotted, not {self.type}")
        if self.version < 1:
            raise ValueError(f"score {self.name!r}: version must be at least 1")

    @property
    def numeric(self) -> bool:
        """Whether the score is a number (rules can compare it, stats and plots summarise it)."""
        return pa.types.is_integer(self.type) or pa.types.is_floating(self.type)

    @property
    def how(self) -> str:
        """How the score is computed, in words."""
        if self.compute is not None:
            return f"quality stage: {self.compute.__module__}.{self.compute.__qualname__}"
        return self.computed_by

    def value(self, info: ClipInfo) -> Any:
        """The clip's value of this score (``None`` when not measured)."""
        if self.derive is not None:
            return self.derive(info)
        if self.compute is not None:
            return info.scores.get(self.name)
        return getattr(info, self.name)

    def stored(self, value: Any) -> float | int | None:
        """A computed value as the clip stores it: an int, or a float rounded by :func:`json_float`."""
        if value is None:
            return None
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if pa.types.is_integer(self.type) else json_float(number)


class ScoreError(RuntimeError):
    """An added score's compute function failed on a clip (the message names the score)."""


def compute_scores(scores: Iterable[Score], clip: ScoreInput) -> dict[str, float | int | None]:
    """The values of ``scores`` (those with a compute function) for one clip, as stored."""
    values = {}
    for score in scores:
        if score.compute is None:
            continue
        try:
            values[score.name] = score.stored(score.compute(clip))
        except Exception as exc:
            raise ScoreError(f"score {score.name!r} failed: {type(exc).__name__}: {exc}") from exc
    return values


class ScoreRegistry:
    """Scores by name, in registration order (the order of the manifest's score columns)."""

    def __init__(self, scores: Iterable[Score] = ()) -> None:
        self._scores: dict[str, Score] = {}
        for score in scores:
            self.register(score)

    def __iter__(self) -> Iterator[Score]:
        return iter(list(self._scores.values()))

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, name: object) -> bool:
        return name in self._scores

    def __getitem__(self, name: str) -> Score:
        return self._scores[name]

    def register(self, score: Score) -> Score:
        """Add ``score``; refuse a name or alias already taken, and a kind that does not fit
        its name (a built-in score must be a :class:`ClipInfo` fact, another must not)."""
        taken = {n for s in self._scores.values() for n in (s.name, *s.aliases)}
        clash = sorted(taken & {score.name, *score.aliases})
        if clash:
            raise ValueError(f"score {score.name!r}: {', '.join(map(repr, clash))} already names a score")
        built_in = score.compute is None and score.derive is None
        if built_in and score.name not in ClipInfo.FACTS:
            raise ValueError(f"score {score.name!r} has no compute function and no stage records a fact of that "
                             f"name (ClipInfo); give it compute=... to have the quality stage compute it")
        if not built_in and score.name in ClipInfo.FACTS:
            raise ValueError(f"score {score.name!r}: the name of a clip fact (ClipInfo) cannot be reused")
        self._scores[score.name] = score
        return score

    def unregister(self, name: str) -> Score:
        """Remove the score ``name`` and return it."""
        try:
            return self._scores.pop(name)
        except KeyError:
            raise KeyError(f"no score {name!r} is registered") from None

    def resolve(self, name: str) -> Score:
        """The score called ``name`` or having it as an alias (``KeyError`` if none)."""
        if name in self._scores:
            return self._scores[name]
        for score in self._scores.values():
            if name in score.aliases:
                return score
        raise KeyError(name)

    @property
    def computed(self) -> tuple[Score, ...]:
        """The scores the quality stage computes with their own function, in order."""
        return tuple(s for s in self._scores.values() if s.compute is not None)


def _sync_offset_abs(info: ClipInfo) -> int | None:
    """The size of the audio/lip offset, whichever way."""
    return None if info.sync_offset is None else abs(info.sync_offset)


def _scene_cut_count(info: ClipInfo) -> int:
    """How many scene cuts the clip crosses."""
    return len(info.scene_cuts or ())


_FRAMES = "face stage (aniportrait.quality.FrameScores)"
_FACES = "face stage (aniportrait.speakers.FaceCounter)"
_QUALITY = "quality stage (aniportrait.quality.clip_quality)"

#: Every registered score. The order of the entries with a manifest column is the order of
#: the manifest's score columns (the built-in ones must keep theirs: same manifest bytes).
SCORES = ScoreRegistry((
    Score("duration_s", pa.float64(), "clip duration", "s", plot=Histogram("durations"), column=False,
          computed_by="clip stage (frames / fps)"),
    Score("face_rate", pa.float64(), "share of frames with a face", "fraction", plot=None,
          computed_by="face stage (MediaPipe detection)"),
    Score("face_px_median", pa.float64(), "median face height", "px", ("face_px",), Histogram("face_sizes"),
          computed_by=_QUALITY),
    Score("face_px_min", pa.float64(), "smallest face height", "px", plot=None, computed_by=_QUALITY),
    Score("yaw_range_deg", pa.float64(), "head yaw range over the clip (p95 - p5)", "deg", ("yaw",),
          computed_by=_QUALITY),
    Score("pitch_range_deg", pa.float64(), "head pitch range (p95 - p5)", "deg", ("pitch",), computed_by=_QUALITY),
    Score("roll_range_deg", pa.float64(), "head roll range (p95 - p5)", "deg", ("roll",), computed_by=_QUALITY),
    Score("jitter", pa.float64(), "median frame-to-frame landmark motion with head pose removed",
          "canonical cm/frame", computed_by=_QUALITY),
    Score("sharpness", pa.float64(), "median variance of the Laplacian on the face box", computed_by=_FRAMES),
    Score("brightness", pa.float64(), "mean grey level of the face box", "0..255", computed_by=_FRAMES),
    Score("scene_cuts", pa.list_(pa.int32()), "frames where a new shot starts", "frame index", plot=None,
          computed_by=_FRAMES),
    Score("scene_cut_count", pa.int32(), "scene cuts inside the clip", plot=None, column=False,
          computed_by="derived: len(scene_cuts)", derive=_scene_cut_count),
    Score("faces_max", pa.int32(), "most faces found on one sampled frame (every 10th)", plot=None,
          computed_by=_FACES),
    Score("second_face_rate", pa.float64(),
          "share of sampled frames with a second face at least half the main face's height", "fraction",
          plot=None, computed_by=_FACES),
    Score("track_jumps", pa.int32(),
          "jumps of the tracked face between frames far beyond head motion (identity switches)", plot=None,
          computed_by="face stage (aniportrait.speakers.track_jumps)"),
    Score("sync_offset", pa.int32(), "audio lag behind the lips (signed)", "frames", plot=Histogram("sync"),
          computed_by=_QUALITY),
    Score("sync_offset_abs", pa.int32(), "absolute audio/lip offset", "frames", plot=None, column=False,
          computed_by="derived: abs(sync_offset)", derive=_sync_offset_abs),
    Score("sync_conf", pa.float64(), "confidence of the sync estimate (peak over median, robust spread)",
          aliases=("sync",), plot=Histogram("sync"), computed_by=_QUALITY),
    Score("sync_score0", pa.float64(), "audio/lip correlation at offset 0", plot=None, computed_by=_QUALITY),
))


def register(score: Score) -> Score:
    """Add ``score`` to :data:`SCORES` (see :meth:`ScoreRegistry.register`)."""
    return SCORES.register(score)


def unregister(name: str) -> Score:
    """Remove the score ``name`` from :data:`SCORES`."""
    return SCORES.unregister(name)


@contextmanager
def registered(*scores: Score) -> Iterator[tuple[Score, ...]]:
    """Register ``scores`` in :data:`SCORES` for the ``with`` block only."""
    done: list[Score] = []
    try:
        for score in scores:
            done.append(register(score))
        yield scores
    finally:
        for score in reversed(done):
            unregister(score.name)
