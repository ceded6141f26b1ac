"""The Audio2Lmk loader's windows/s against the trainers' windows/s, as a ratio, in one run.

* **loader**: ``ShardStream(batch_size=...)`` + ``Audio2LmkWindows``, what the trainer
  iterates (batches collated in the workers), with 0, 1 and 2 DataLoader workers,
  several epochs, after one warm-up epoch. To give each epoch a realistic size the
  shard list holds every shard ``--repeat`` times (the sample has one shard of 3 clips).
* **trainer compute**: optimizer steps (forward, L1, backward, clipping, AdamW) of
  Audio2Mesh and Audio2Pose on batches already in memory, for the ``tiny`` config, a
  ``mid`` one and, with ``--official``, the official sizes: windows/s of compute alone.
* **end to end**: ``train()`` for ``--steps`` steps with 1 loader worker (its
  ``train.csv`` windows/s, the first logging interval dropped).

ratio = loader windows/s / trainer windows/s: above 1 the loader keeps up (it runs in its
own processes, so the step rate is what bounds training). Only ratios of one run mean
anything; it asserts nothing about time.

Shards: ``--shards`` (any spec ``expand_shards`` takes). Default: the embedded sample
built once into ``--cache`` with a random wav2vec2 of hidden size 768 (2 layers, so
the features have the real width: 768-d float16 per frame) and reused after that.

    python benchmarks/bench_loader.py [--shards SPEC] [--window 60] [--batch-size 16] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.audio2lmk import TeacherForcedHead  # noqa: E402
from pipelines.training.audio2lmk import (Audio2LmkTrainConfig, build_model, forced_prediction,  # noqa: E402
                                          masked_l1, model_config, train)
from pipelines.training.loop import read_result  # noqa: E402
from pipelines.training.stream import ShardStream, expand_shards  # noqa: E402
from pipelines.training.windows import MEMBERS, Audio2LmkWindows  # noqa: E402

MID = {"audio2mesh": {"hidden": 256}, "audio2pose": {"hidden": 256, "heads": 4, "layers": 4, "ffn": 512}}
console = Console()


def sample_shards(cache: Path) -> str:
    """The sample built with 768-d random wav2vec2 features (built on first use)."""
    out = cache / "sample-768"
    if (out / "release.json").exists():
        return str(out)
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model_dir = cache / "wav2vec2-768-random"
    Wav2Vec2Model(Wav2Vec2Config(num_hidden_layers=2)).eval().save_pretrained(model_dir)
    console.print(f"building the sample with 768-d features into {out} (once)")
    subprocess.run([sys.executable, "-m", "cli", "build", "--dataset", "sample", "--out", str(out), "--size", "256",
                    "--wav2vec2", str(model_dir), "--workers", "2"], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return str(out)


def loader_rate(shards: list[str], window: int, batch_size: int, workers: int, epochs: int,
                shuffle_buffer: int) -> tuple[float, int]:
    """Windows/s of the trainer's input pipeline over ``epochs`` epochs (after a warm-up epoch; each epoch
    starts its DataLoader workers and fills the shuffle buffers anew, and that is timed)."""
    def stream(n: int, start: int = 0) -> ShardStream:
        from pipelines.training.stream import StreamPosition

        return ShardStream(shards, Audio2LmkWindows(window), seed=0, shuffle_buffer=shuffle_buffer, epochs=start + n,
                           num_workers=workers, members=MEMBERS, position=StreamPosition(start, 0),
                           batch_size=batch_size)

    for _ in stream(1):
        pass
    windows, started = 0, time.perf_counter()
    for batch in stream(epochs, start=1):
        windows += len(batch["mask"])
    return windows / (time.perf_counter() - started), windows


def compute_rate(kind: str, preset: str, overrides: dict, shards: list[str], window: int, batch_size: int,
                 steps: int) -> float:
    """Windows/s of optimizer steps on batches held in memory."""
    cfg = Audio2LmkTrainConfig(kind=kind, shards=shards, out="unused", window=window, batch_size=batch_size,
                               model="official" if preset == "official" else "tiny", model_overrides=overrides)
    data = list(ShardStream(shards, Audio2LmkWindows(window), seed=0, shuffle_buffer=1, epochs=1, members=MEMBERS,
                            batch_size=batch_size))
    data = [b for b in data if len(b["mask"]) == batch_size] or data
    audio_dim = data[0]["features"].shape[-1]
    torch.manual_seed(0)
    head = TeacherForcedHead(build_model(kind, model_config(cfg, audio_dim)))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4)

    def step(batch: dict) -> None:
        prediction, target, mask = forced_prediction(head, kind, batch)
        loss = masked_l1(prediction, target, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()

    for batch in data[:2]:
        step(batch)
    started = time.perf_counter()
    for i in range(steps):
        step(data[i % len(data)])
    return steps * batch_size / (time.perf_counter() - started)


def end_to_end_rate(kind: str, preset: str, overrides: dict, shards: list[str], window: int, batch_size: int,
                    steps: int, threads: int, shuffle_buffer: int) -> float:
    """Windows/s that ``train()`` logs (1 loader worker), first logging interval left out."""
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as out:
        cfg = Audio2LmkTrainConfig(kind=kind, shards=shards, out=out, steps=steps, batch_size=batch_size,
                                   window=window, model="official" if preset == "official" else "tiny",
                                   model_overrides=overrides, loader_workers=1, log_every=max(1, steps // 5),
                                   checkpoint_every=steps, progress=False, threads=threads, shuffle_buffer=shuffle_buffer)
        train(cfg)
        from pipelines.training.logs import CsvLog

        rows = CsvLog.read(Path(out) / "train.csv")[1:]
        read_result(out)
    return sum(float(r["windows_per_s"]) for r in rows) / max(1, len(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="shards to read (default: the sample with 768-d features, built once)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "aniportrait-bench",
                        help="where the default sample is built")
    parser.add_argument("--repeat", type=int, default=64, help="times each shard is listed in one epoch")
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="timed loader epochs")
    parser.add_argument("--shuffle-buffer", type=int, default=64, help="windows in each worker's shuffle buffer")
    parser.add_argument("--steps", type=int, default=30, help="timed trainer steps per config")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    parser.add_argument("--official", action="store_true", help="also time the official model sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = args.shards or sample_shards(args.cache)
    shards = expand_shards(spec) * args.repeat
    console.print(f"shards: {spec} x{args.repeat}; window {args.window}, batch {args.batch_size}, "
                  f"{args.threads} torch thread(s), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    loaders = {}
    table = Table(title="loader (ShardStream -> windows -> batches, collated in the workers)")
    for column in ("DataLoader workers", "windows", "windows/s"):
        table.add_column(column, justify="right")
    for workers in (0, 1, 2):
        rate, count = loader_rate(shards, args.window, args.batch_size, workers, args.epochs, args.shuffle_buffer)
        loaders[workers] = rate
        table.add_row(str(workers), str(count), f"{rate:,.0f}")
    console.print(table)

    presets = [("tiny", {}), ("mid", None)] + ([("official", {})] if args.official else [])
    table = Table(title="trainer vs loader (ratio = loader windows/s / trainer windows/s)")
    for column in ("model", "config", "train windows/s", "ratio, 0 workers", "ratio, 1 worker", "ratio, 2 workers",
                   "end to end windows/s (1 worker)"):
        table.add_column(column, justify="right")
    for kind in ("audio2mesh", "audio2pose"):
        for preset, overrides in presets:
            overrides = MID[kind] if overrides is None else overrides
            rate = compute_rate(kind, preset, overrides, shards[:1], args.window, args.batch_size, args.steps)
            e2e = end_to_end_rate(kind, preset, overrides, shards, args.window, args.batch_size, args.steps,
                                  args.threads, args.shuffle_buffer)
            table.add_row(kind, preset, f"{rate:,.0f}", *(f"{loaders[w] / rate:.1f}x" for w in (0, 1, 2)),
                          f"{e2e:,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
