"""Pose images for the Lmk2Video trainers: draw them from ``lmks.npy`` or decode ``pose.mp4``?

Both ways give the official lip-coloured pose image; this measures, in one run and on
the same shard samples, the wall time per pose image of each way for the three access
patterns of the trainers:

* ``clip``: every frame of a clip, in order;
* ``stage1``: one random frame of a clip (the stage-1 target);
* ``stage2``: one 16-frame window (stride 1, or 4 with 50% chance; the stage-2 sample).

Each pattern runs ``--repeats`` times per clip with fresh random indices (the same ones
for both ways), alternating which way goes first. Costs are this process's CPU time
(``time.process_time``: both ways run on one thread), which other load on a shared machine
disturbs far less than wall time. It prints CPU ms per image and the ratio draw / decode
(below 1: drawing is cheaper), and checks that both ways give the same images at the
clip's own size. It asserts nothing about time.

    python benchmarks/bench_pose_source.py SHARDS [--size 256] [--repeats 20] [--seed 0]

``SHARDS``: a built dataset folder, a shard folder or shard paths (``::``-separated).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import cv2  # noqa: F401  (before decord, imported by pipelines.training.frames)
import numpy as np
import webdataset as wds

from pipelines.training.frames import POSE_SOURCES, pose_frames, read_frames, video_length
from pipelines.training.lmk2video_samples import window_indices
from pipelines.training.stream import expand_shards

PATTERNS = ("clip", "stage1", "stage2")


def pattern_indices(pattern: str, length: int, rng: random.Random) -> list[int]:
    """Frame indices one trainer access of ``pattern`` reads from a ``length``-frame clip."""
    if pattern == "clip":
        return list(range(length))
    if pattern == "stage1":
        return [rng.randrange(length)]
    return window_indices(length, 16, rng.choice((1, 4)), rng)


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", help="dataset folder, shard folder or shard paths ('::'-separated)")
    parser.add_argument("--size", type=int, default=None, help="square pose-image size (default: the clip's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    samples = list(wds.WebDataset(expand_shards(args.shards), shardshuffle=False))
    rng = random.Random(args.seed)
    seconds = {(p, s): 0.0 for p in PATTERNS for s in POSE_SOURCES}
    images = {p: 0 for p in PATTERNS}
    max_diff = 0
    for sample in samples:
        length = video_length(sample["mp4"])
        height, width = read_frames(sample["mp4"], [0]).shape[1:3]
        size = (width, height) if args.size is None else (args.size, args.size)
        for pattern in PATTERNS:
            for repeat in range(args.repeats if pattern != "clip" else max(1, args.repeats // 10)):
                indices = pattern_indices(pattern, length, rng)
                order = POSE_SOURCES if repeat % 2 == 0 else POSE_SOURCES[::-1]
                outputs = {}
                for source in order:
                    elapsed, outputs[source] = timed(lambda: pose_frames(sample, indices, size, source))  # noqa: B023
                    seconds[pattern, source] += elapsed
                images[pattern] += len(indices)
                if args.size is None:
                    diff = np.abs(outputs["draw"].astype(np.int16) - outputs["video"].astype(np.int16)).max()
                    max_diff = max(max_diff, int(diff))

    print(f"{len(samples)} clips from {args.shards}; size {args.size or 'native'}; repeats {args.repeats}")
    print(f"{'pattern':8} {'images':>7} {'draw CPU ms':>12} {'decode CPU ms':>14} {'draw/decode':>12}")
    ratios = []
    for pattern in PATTERNS:
        draw = seconds[pattern, "draw"] / images[pattern] * 1e3
        decode = seconds[pattern, "video"] / images[pattern] * 1e3
        ratios.append(draw / decode)
        print(f"{pattern:8} {images[pattern]:7d} {draw:12.3f} {decode:14.3f} {draw / decode:12.3f}")
    if args.size is None:
        print(f"largest pixel difference draw vs pose.mp4: {max_diff} (0 = identical images)")
    print(f"faster: {'draw' if statistics.median(ratios) < 1 else 'decode'} (median ratio {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
