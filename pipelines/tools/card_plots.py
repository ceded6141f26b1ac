"""The plots of the dataset card: matplotlib figures rendered to PNG bytes.

Figures are drawn with the Agg canvas directly (no pyplot, no global backend switch)
under matplotlib's default style, at a fixed size and dpi, and saved without the
``Software`` text chunk, so the same data gives the same PNG bytes. Every plot is
optional: a column that is absent or all null gives no plot, not an error.

Values that the manifest does not hold yet come from the shards: per-frame head pose
(``pose6d.npy``, Euler ``xyz`` degrees in the first three columns) and face size (the
landmarks' bounding box) of the first clips of up to :data:`POSE_SHARDS` evenly spaced
shards, so a card of a large release reads a bounded amount of data.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aniportrait.matplotlib_dir import keep_matplotlib_in_temp

keep_matplotlib_in_temp()  # before matplotlib is imported: its cache and config stay out of $HOME
from matplotlib import style  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipelines.tools.export import iter_samples  # noqa: E402

FIG_SIZE = (8.0, 4.0)
DPI = 100
#: Shards read for per-frame pose and face size, and clips read from each.
POSE_SHARDS = 16
POSE_CLIPS_PER_SHARD = 16
#: Euler ``xyz`` angles of ``pose6d.npy``: rotation about x is pitch, y yaw, z roll.
POSE_AXES = ("pitch (x)", "yaw (y)", "roll (z)")
QUALITY_COLUMNS = ("yaw_range_deg", "pitch_range_deg", "roll_range_deg", "jitter", "sharpness", "brightness")
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
            pose = _array(sample, "pose6d.npy")
            if pose is not None and pose.ndim == 2 and pose.shape[1] >= 3:
                angles = pose[:, :3]
                frames.angles.append(angles[np.isfinite(angles).all(axis=1)])
            size = _face_px(sample)
            if size is not None:
                frames.face_px.append(size)
    return frames


def _array(sample: dict[str, Any], member: str) -> np.ndarray | None:
    return np.load(io.BytesIO(sample[member])) if member in sample else None


def _face_px(sample: dict[str, Any]) -> float | None:
    """Median side, in pixels, of the landmarks' bounding box over the face frames."""
    lmks, has_face = _array(sample, "lmks.npy"), _array(sample, "has_face.npy")
    if lmks is None or lmks.ndim != 3 or len(lmks) == 0:
        return None
    info = json.loads(sample["json"]).get("info", {})
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


def _histogram(ax: Any, values: np.ndarray, xlabel: str) -> None:
    ax.hist(np.sort(values), bins=min(40, max(5, int(np.sqrt(len(values))) + 1)), color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _durations(rows: list[dict[str, Any]]) -> Plot | None:
    values = column(rows, "duration_s")
    if not len(values):
        return None
    figure, (ax,) = _new_figure()
    _histogram(ax, values, "clip duration (s)")
    return Plot("durations.png", "Clip durations", f"{len(values)} clips, median {np.median(values):.1f} s.",
                _png(figure))


def _face_sizes(rows: list[dict[str, Any]], frames: ShardFrames) -> Plot | None:
    values = column(rows, "face_px_median")
    if len(values):
        caption = f"median face size per clip (manifest `face_px_median`), {len(values)} clips."
    else:
        values = np.array(frames.face_px)
        caption = (f"median side of the landmarks' bounding box per clip, from the first {frames.clips} clips "
                   f"of {frames.shards} shard(s).")
    if not len(values):
        return None
    figure, (ax,) = _new_figure()
    _histogram(ax, values, "face size (px)")
    return Plot("face_sizes.png", "Face sizes", caption, _png(figure))


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


def _sync(rows: list[dict[str, Any]]) -> Plot | None:
    present = [(name, column(rows, name)) for name in ("sync_offset", "sync_conf")]
    present = [(name, values) for name, values in present if len(values)]
    if not present:
        return None
    figure, axes = _new_figure(len(present))
    for ax, (name, values) in zip(axes, present):
        _histogram(ax, values, name)
    return Plot("sync.png", "Audio-video sync", f"manifest columns {', '.join(n for n, _ in present)}.",
                _png(figure))


def _quality(rows: list[dict[str, Any]]) -> Plot | None:
    present = [(name, column(rows, name)) for name in QUALITY_COLUMNS]
    present = [(name, values) for name, values in present if len(values)]
    if not present:
        return None
    figure = Figure(figsize=(FIG_SIZE[0], FIG_SIZE[1] * ((len(present) + 2) // 3)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots((len(present) + 2) // 3, 3, squeeze=False).ravel()
    for ax, (name, values) in zip(grid, present):
        _histogram(ax, values, name)
    for ax in grid[len(present):]:
        ax.set_axis_off()
    return Plot("quality.png", "Per-clip quality measures",
                f"manifest columns {', '.join(n for n, _ in present)} of the kept clips.", _png(figure))


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


def make_plots(rows: list[dict[str, Any]], frames: ShardFrames) -> list[Plot]:
    """Every plot the data allows, in card order."""
    with style.context("default"):
        plots = [_durations(rows), _face_sizes(rows, frames), _head_pose(frames), _sync(rows), _quality(rows),
                 _failures(rows)]
    return [plot for plot in plots if plot is not None]


#: Every file name :func:`make_plots` may write (an old card's plots that no longer apply are removed).
PLOT_NAMES = ("durations.png", "face_sizes.png", "head_pose.png", "sync.png", "quality.png", "failures.png")
