"""The plots of the dataset card: matplotlib figures rendered to PNG bytes.

Figures are drawn with the Agg canvas directly (no pyplot, no global backend switch)
under matplotlib's default style, at a fixed size and dpi, and saved without the
``Software`` text chunk, so the same data gives the same PNG bytes. Every plot is
optional: a column that is absent or all null gives no plot, not an error.

The score figures (:data:`aniportrait.scores.CARD_FIGURES`) hold a histogram panel for
each score of the registry whose ``plot`` names the figure, in registry order.

Values that the manifest does not hold yet come from the shards: per-frame head pose
(``pose6d.npy``, Euler ``xyz`` degrees in the first three columns) and face size (the
landmarks' bounding box) of the first clips of up to :data:`POSE_SHARDS` evenly spaced
shards, so a card of a large release reads a bounded amount of data.
"""

from __future__ import annotations

import io
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aniportrait.format import HAS_FACE, LANDMARKS, POSE6D, iter_samples, read_array, read_meta
from aniportrait.matplotlib_dir import keep_matplotlib_in_temp
from aniportrait.scores import CARD_FIGURES, SCORES, Score, ScoreRegistry

keep_matplotlib_in_temp()  # before matplotlib is imported: its cache and config stay out of $HOME
from matplotlib import style  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

FIG_SIZE = (8.0, 4.0)
DPI = 100
#: Shards read for per-frame pose and face size, and clips read from each.
POSE_SHARDS = 16
POSE_CLIPS_PER_SHARD = 16
#: Euler ``xyz`` angles of ``pose6d.npy``: rotation about x is pitch, y yaw, z roll.
POSE_AXES = ("pitch (x)", "yaw (y)", "roll (z)")
#: Panels per row of a score figure.
PANELS_PER_ROW = 3
FAILURE_BARS = 15


@dataclass(frozen=True)
class Plot:
    """One PNG of the card: its file name, title, a one-line caption and the bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass
class ShardFrames:
    """Per-frame head pose and per-clip face size read from a sample of the shards."""

    clips: int = 0
    shards: int = 0
    angles: list[np.ndarray] = field(default_factory=list)
    face_px: list[float] = field(default_factory=list)


def spread(names: list[str], count: int) -> list[str]:
    """Up to ``count`` names evenly spaced over ``names`` (all of them when few)."""
    if len(names) <= count:
        return list(names)
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def read_shard_frames(out_uri: str, shard_names: list[str]) -> ShardFrames:
    """Head pose of every face frame and the median face size of each clip, from the
    first :data:`POSE_CLIPS_PER_SHARD` clips of up to :data:`POSE_SHARDS` shards."""
    frames = ShardFrames()
    for name in spread(shard_names, POSE_SHARDS):
        frames.shards += 1
        for sample in itertools.islice(iter_samples(out_uri, [name]), POSE_CLIPS_PER_SHARD):
            frames.clips += 1
            pose = read_array(sample, POSE6D, required=False)
            if pose is not None and pose.ndim == 2 and pose.shape[1] >= 3:
                angles = pose[:, :3]
                frames.angles.append(angles[np.isfinite(angles).all(axis=1)])
            size = _face_px(sample)
            if size is not None:
                frames.face_px.append(size)
    return frames


def _face_px(sample: dict[str, Any]) -> float | None:
    """Median side, in pixels, of the landmarks' bounding box over the face frames."""
    lmks, has_face = read_array(sample, LANDMARKS, required=False), read_array(sample, HAS_FACE, required=False)
    if lmks is None or lmks.ndim != 3 or len(lmks) == 0:
        return None
    info = read_meta(sample).get("info", {})
    width, height = info.get("width"), info.get("height")
    if not width or not height:
        return None
    xy = lmks[..., :2]
    keep = np.isfinite(xy).all(axis=(1, 2))
    if has_face is not None and len(has_face) == len(keep):
        keep &= has_face.astype(bool)
    if not keep.any():
        return None
    extent = xy[keep].max(axis=1) - xy[keep].min(axis=1)
    return float(np.median(np.maximum(extent[:, 0] * width, extent[:, 1] * height)))


def column(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    """Finite values of a manifest column over the kept (``ok``) clips; empty when absent or null."""
    values = [r.get(name) for r in rows if r.get("status") == "ok"]
    array = np.array([v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)], dtype=float)
    return array[np.isfinite(array)]


def failure_reason(row: dict[str, Any]) -> str:
    """A row's failure reason with numbers replaced by ``N``, so alike failures group together."""
    error = (row.get("error") or "unknown error").splitlines()[0]
    if row.get("status") == "filtered" or error.startswith("filtered:"):
        return error
    error = re.sub(r"\b\d+(?:\.\d+)?\b", "N", error)
    error = error if len(error) <= 90 else error[:87] + "..."
    return f"{row.get('failed_stage') or 'unknown stage'}: {error}"


def failure_counts(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Reasons of the failed and filtered clips, most common first (ties by name)."""
    counts = Counter(failure_reason(r) for r in rows if r.get("status") in ("failed", "filtered"))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _new_figure(panels: int = 1) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=FIG_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _histogram(ax: Any, values: np.ndarray, xlabel: str, bins: int | None = None) -> None:
    ax.hist(np.sort(values), bins=bins or min(40, max(5, int(np.sqrt(len(values))) + 1)), color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _score_figure(rows: list[dict[str, Any]], figure_name: str, scores: ScoreRegistry) -> Plot | None:
    """The histograms of the scores plotted in ``figure_name`` that the kept clips have values of."""
    present: list[tuple[Score, np.ndarray]] = [
        (score, column(rows, score.name)) for score in scores
        if score.plot is not None and score.plot.figure == figure_name]
    present = [(score, values) for score, values in present if len(values)]
    if not present:
        return None
    grid_rows = -(-len(present) // PANELS_PER_ROW)
    figure = Figure(figsize=(FIG_SIZE[0], FIG_SIZE[1] * grid_rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(grid_rows, min(len(present), PANELS_PER_ROW), squeeze=False).ravel()
    for ax, (score, values) in zip(grid, present):
        _histogram(ax, values, f"{score.name} ({score.unit})" if score.unit else score.name, score.plot.bins)
    for ax in grid[len(present):]:
        ax.set_axis_off()
    names = ", ".join(f"`{score.name}`" for score, _ in present)
    clips = max(len(values) for _, values in present)
    return Plot(f"{figure_name}.png", CARD_FIGURES[figure_name],
                f"manifest column{'s' if len(present) > 1 else ''} {names} of the kept clips ({clips} clips).",
                _png(figure))


def _shard_face_sizes(frames: ShardFrames) -> Plot | None:
    """Face sizes from the shards' landmarks, for a manifest without face sizes."""
    if not frames.face_px:
        return None
    figure, (ax,) = _new_figure()
    _histogram(ax, np.array(frames.face_px), "face size (px)")
    caption = (f"median side of the landmarks' bounding box per clip, from the first {frames.clips} clips "
               f"of {frames.shards} shard(s).")
    return Plot("face_sizes.png", CARD_FIGURES["face_sizes"], caption, _png(figure))


def _head_pose(frames: ShardFrames) -> Plot | None:
    angles = np.concatenate(frames.angles) if frames.angles else np.empty((0, 3))
    if not len(angles):
        return None
    figure, axes = _new_figure(3)
    for index, (ax, label) in enumerate(zip(axes, POSE_AXES)):
        _histogram(ax, angles[:, index], f"{label} (deg)")
    caption = (f"per-frame head rotation (`pose6d.npy`) of {len(angles)} frames: the first {frames.clips} clips "
               f"of {frames.shards} shard(s).")
    return Plot("head_pose.png", "Head-pose distribution", caption, _png(figure))


def _failures(rows: list[dict[str, Any]]) -> Plot | None:
    counts = failure_counts(rows)
    if not counts:
        return None
    shown = counts[:FAILURE_BARS]
    rest = sum(count for _, count in counts[FAILURE_BARS:])
    if rest:
        shown.append((f"{len(counts) - FAILURE_BARS} other reasons", rest))
    figure = Figure(figsize=(FIG_SIZE[0] + 2, max(FIG_SIZE[1], 0.35 * len(shown) + 1)), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    labels = [reason if len(reason) <= 60 else reason[:57] + "..." for reason, _ in shown]
    ax.barh(range(len(shown)), [count for _, count in shown], color="#c44e52")
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("clips")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    total = sum(count for _, count in counts)
    return Plot("failures.png", "Failure reasons", f"{total} clips failed or were filtered out.", _png(figure))


def make_plots(rows: list[dict[str, Any]], frames: ShardFrames, scores: ScoreRegistry = SCORES) -> list[Plot]:
    """Every plot the data allows, in card order."""
    with style.context("default"):
        plots = [_score_figure(rows, "durations", scores),
                 _score_figure(rows, "face_sizes", scores) or _shard_face_sizes(frames), _head_pose(frames),
                 _score_figure(rows, "sync", scores), _score_figure(rows, "quality", scores), _failures(rows)]
    return [plot for plot in plots if plot is not None]


#: Every file name :func:`make_plots` may write (an old card's plots that no longer apply are removed).
PLOT_NAMES = (*(f"{name}.png" for name in CARD_FIGURES), "head_pose.png", "failures.png")
