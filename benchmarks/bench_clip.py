"""Clip-stage throughput of ``aniportrait-data build`` at 1 and 2 Ray workers.

Writes a temporary ``sample``-format dataset (HDTF lists plus a mirror of symlinks) of
1-3 s clips cut from real media, builds it with ``workers=1`` and ``workers=2`` into fresh
output and work folders (nothing cached), alternating the order over the repeats, and
prints clip-seconds per wall-second of the process phase and the speed-up of 2 workers
over 1. Both builds share one machine, so the speed-up ratio is the number to read.

    python benchmarks/bench_clip.py [--clips N] [--media DIR] [--repeats R]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from rich.console import Console
from rich.table import Table

from aniportrait.media.probe import probe
from datasets_spec import sample
from pipelines.build.run import run_build
from pipelines.runtime import init_ray
from pipelines.build.config import BuildConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
#: Clip lengths in seconds, cycled along each source (shifted on each reuse of a source).
SPAN_LENGTHS_S = (2, 3, 1)
WORKER_COUNTS = (1, 2)
#: Small shards, so the identity check compares several shard hashes.
SHARD_SAMPLES = 4
LISTS = ("video_url", "resolution", "annotion_time", "crop_wh", "crop_ratio")


@dataclass(frozen=True)
class Run:
    """One timed build."""

    workers: int
    clip_s: float
    process_s: float
    total_s: float
    shard_sha256: tuple[str, ...]

    @property
    def throughput(self) -> float:
        """Clip-seconds per wall-second of the process phase."""
        return self.clip_s / self.process_s


def source_videos(media: Path) -> list[Path]:
    """The ``*.mp4`` files of ``media``, or the embedded sample's two videos without it."""
    videos = sorted(media.glob("*.mp4")) if media.is_dir() else []
    return videos or sorted(sample.default_mirror().glob("*.mp4"))


def spans(seconds: int, shift: int) -> list[tuple[int, int]]:
    """Consecutive whole-second spans covering ``[0, seconds)``, lengths cycled from ``shift``."""
    out: list[tuple[int, int]] = []
    start, i = 0, shift
    while start < seconds:
        end = min(seconds, start + SPAN_LENGTHS_S[i % len(SPAN_LENGTHS_S)])
        out.append((start, end))
        start, i = end, i + 1
    return out


def mmss(seconds: int) -> str:
    """``seconds`` as the lists' ``mm:ss``."""
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def write_dataset(videos: list[Path], clips: int, metadata: Path, mirror: Path) -> tuple[int, int]:
    """Write the ``SAMPLE_*`` lists for ``clips`` clips and the mirror; return (clips, sources).

    Each source is listed with consecutive spans; when the sources run out before
    ``clips``, they are listed again under new names (``<name>_r<pass>``) with other spans.
    Crops are the centred square of each source.
    """
    infos = {v: probe(v) for v in videos}
    usable = [v for v in videos if infos[v].duration_s >= 1]
    if not usable:
        raise SystemExit("no source video of at least 1 s found")
    lines: dict[str, list[str]] = {kind: [] for kind in LISTS}
    listed = sources = passes = 0
    while listed < clips:
        for video in usable:
            if listed == clips:
                break
            info = infos[video]
            stem = re.sub(r"[^A-Za-z0-9_-]", "_", video.stem)
            name = f"{stem}_r{passes}" if passes else stem
            (mirror / f"{name}.mp4").symlink_to(video.resolve())
            chosen = spans(math.floor(info.duration_s), passes)[: clips - listed]
            side = min(info.width, info.height)
            x, y = (info.width - side) // 2, (info.height - side) // 2
            lines["video_url"].append(f"{name} https://example.invalid/{name}")
            lines["resolution"].append(f"{name} {info.height}")
            lines["annotion_time"].append(" ".join([name] + [f"{mmss(a)}-{mmss(b)}" for a, b in chosen]))
            for k in range(len(chosen)):
                lines["crop_wh"].append(f"{name}_{k} {x} {side} {y} {side}")
                lines["crop_ratio"].append(f"{name}_{k} 1.0")
            listed += len(chosen)
            sources += 1
        passes += 1
    for kind, rows in lines.items():
        (metadata / f"SAMPLE_{kind}.txt").write_text("\n".join(rows) + "\n")
    return listed, sources


def timed_build(root: Path, tag: str, workers: int, metadata: Path, mirror: Path) -> Run:
    """Build into fresh ``out-<tag>``/``work-<tag>`` folders; exit if any clip failed."""
    cfg = BuildConfig(dataset="sample", out=str(root / f"out-{tag}"), work_dir=str(root / f"work-{tag}"),
                      metadata=str(metadata), mirror=str(mirror), workers=workers,
                      shard_samples=SHARD_SAMPLES)
    started = time.perf_counter()
    result = run_build(cfg, Console(quiet=True))
    total = time.perf_counter() - started
    failed = [s.record.clip_id for s in result.states if not s.ok]
    if failed:
        raise SystemExit(f"build {tag}: {len(failed)} clips failed: {', '.join(failed)}")
    clip_s = sum(float(s.info.duration_s) for s in result.states)
    shards = tuple(s["sha256"] for s in result.release["shards"])
    return Run(workers, clip_s, result.timings_s["process"], total, shards)


def report(runs: list[list[Run]], clips: int, console: Console) -> None:
    """Print the per-worker table, the speed-up and the shard identity check."""
    table = Table(title="clip stage throughput (median over repeats)")
    for column in ("workers", "clip-s", "process s", "total s", "clip-s / wall-s"):
        table.add_column(column, justify="right")
    for workers in WORKER_COUNTS:
        mine = [r for repeat in runs for r in repeat if r.workers == workers]
        table.add_row(str(workers), f"{mine[0].clip_s:.1f}",
                      f"{statistics.median(r.process_s for r in mine):.2f}",
                      f"{statistics.median(r.total_s for r in mine):.2f}",
                      f"{statistics.median(r.throughput for r in mine):.2f}")
    console.print(table)
    ratios = []
    for i, repeat in enumerate(runs):
        by_workers = {r.workers: r for r in repeat}
        ratio = by_workers[2].throughput / by_workers[1].throughput
        ratios.append(ratio)
        order = " then ".join(str(r.workers) for r in repeat)
        console.print(f"repeat {i + 1} (workers {order}): "
                      + ", ".join(f"{r.workers}w {r.throughput:.2f} clip-s/s" for r in repeat)
                      + f", speed-up {ratio:.2f}x")
    speedup = statistics.median(ratios)
    console.print(f"[bold]speed-up 2 workers / 1 worker: {speedup:.2f}x[/] "
                  f"(per-core efficiency {speedup / 2:.0%}, median of {len(ratios)} paired repeats)")
    console.print("Both runs share one machine (and its noise): read the ratio, not the absolute rates.")
    all_runs = [r for repeat in runs for r in repeat]
    hashes = {r.shard_sha256 for r in all_runs}
    console.print(f"all {clips} clips ok in all {len(all_runs)} builds; shards byte-identical across builds: "
                  f"{'yes' if len(hashes) == 1 else 'NO'} ({len(next(iter(hashes)))} shards)")
    if len(hashes) != 1:
        raise SystemExit("the builds produced different shards")


def main() -> None:
    """Parse arguments, write the dataset, run the paired builds, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="clips in the dataset (default 12)")
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA,
                        help="folder of source .mp4 files (default ../shared/fixtures/media)")
    parser.add_argument("--repeats", type=int, default=2, help="paired 1/2-worker builds (default 2)")
    args = parser.parse_args()
    if args.clips < 1 or args.repeats < 1:
        parser.error("--clips and --repeats must be at least 1")
    console = Console()
    videos = source_videos(args.media)
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as tmp:
        root = Path(tmp)
        metadata, mirror = root / "metadata", root / "mirror"
        metadata.mkdir()
        mirror.mkdir()
        clips, sources = write_dataset(videos, args.clips, metadata, mirror)
        console.print(f"1-minute load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        console.print(f"{clips} clips from {sources} listed sources ({len(videos)} files: "
                      f"{', '.join(v.name for v in videos)})")
        started = time.perf_counter()
        init_ray(None)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        console.print(f"ray started in {time.perf_counter() - started:.1f} s "
                      f"({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        runs: list[list[Run]] = []
        for repeat in range(args.repeats):
            order = WORKER_COUNTS if repeat % 2 == 0 else WORKER_COUNTS[::-1]
            runs.append([timed_build(root, f"{repeat}-{w}", w, metadata, mirror) for w in order])
        ray.shutdown()
        report(runs, clips, console)
    console.print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
