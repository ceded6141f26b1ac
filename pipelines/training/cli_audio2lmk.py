"""``aniportrait-data train audio2mesh|audio2pose``: the Audio2Lmk trainers from the command line.

Imports only typer and rich at start-up; torch loads when a command runs. ``train_app``
is the ``train`` command group (the Lmk2Video trainers add their commands to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli_common import EXIT_USAGE, console
from pipelines.training.cli_options import (Address, Gpu, LoaderWorkers, Resume, Seed, Shards, Steps, Threads,
                                          Workers)

train_app = typer.Typer(help="Train the AniPortrait models on built shards.", no_args_is_help=True)
Out = Annotated[Path, typer.Option(help="Run folder: checkpoints/, train.csv, eval.csv, tb/, config.json.")]
BatchSize = Annotated[int, typer.Option(help="Windows per step and worker.", min=1)]
Window = Annotated[int, typer.Option(help="Frames per training window (30 fps).", min=2)]
Lr = Annotated[float, typer.Option(help="AdamW learning rate.")]
Preset = Annotated[str, typer.Option("--config", help="Model size: tiny (sized to the features) or official.")]
EvalShards = Annotated[Optional[str], typer.Option(help="Held-out shards, evaluated at every checkpoint.")]
CheckpointEvery = Annotated[int, typer.Option(help="Save (and evaluate) every N steps, and at the end.", min=1)]
ShuffleBuffer = Annotated[int, typer.Option(help="Windows held by the shuffle buffer.", min=1)]


def _train(kind: str, shards: str, out: Path, steps: int, batch_size: int, window: int, lr: float, seed: int,
           workers: int, gpu: bool, preset: str, resume: bool, eval_shards: str | None, checkpoint_every: int,
           loader_workers: int, shuffle_buffer: int, threads: int | None, address: str | None) -> None:
    from pipelines.training.audio2lmk import Audio2LmkTrainConfig, train

    try:
        cfg = Audio2LmkTrainConfig(kind=kind, shards=[shards], out=str(out), steps=steps, batch_size=batch_size,
                                   window=window, lr=lr, seed=seed, workers=workers, use_gpu=gpu, model=preset,
                                   resume=resume, eval_shards=[eval_shards] if eval_shards else [],
                                   checkpoint_every=checkpoint_every, loader_workers=loader_workers,
                                   shuffle_buffer=shuffle_buffer, threads=threads)
        result = train(cfg, ray_address=address)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    last = f"{result.losses[-1][1]:.4g}" if result.losses else "-"
    console.print(f"[green]{kind}[/]: step {result.step}, loss {last}; checkpoint {result.checkpoint}")
    for name, value in result.eval.items():
        console.print(f"  eval {name}: {value:.4g}")


@train_app.command()
def audio2mesh(shards: Shards, out: Out, steps: Steps = 20_000, batch_size: BatchSize = 16, window: Window = 60,
               lr: Lr = 1e-4, seed: Seed = 0, workers: Workers = 1, gpu: Gpu = False, preset: Preset = "official",
               resume: Resume = False, eval_shards: EvalShards = None, checkpoint_every: CheckpointEvery = 1000,
               loader_workers: LoaderWorkers = 1, shuffle_buffer: ShuffleBuffer = 512, threads: Threads = None,
               address: Address = None) -> None:
    """Train Audio2Mesh (wav2vec2 features -> mesh offsets) on the shards' cached features."""
    _train("audio2mesh", shards, out, steps, batch_size, window, lr, seed, workers, gpu, preset, resume, eval_shards,
           checkpoint_every, loader_workers, shuffle_buffer, threads, address)


@train_app.command()
def audio2pose(shards: Shards, out: Out, steps: Steps = 20_000, batch_size: BatchSize = 16, window: Window = 150,
               lr: Lr = 1e-4, seed: Seed = 0, workers: Workers = 1, gpu: Gpu = False, preset: Preset = "official",
               resume: Resume = False, eval_shards: EvalShards = None, checkpoint_every: CheckpointEvery = 1000,
               loader_workers: LoaderWorkers = 1, shuffle_buffer: ShuffleBuffer = 512, threads: Threads = None,
               address: Address = None) -> None:
    """Train Audio2Pose (features + identity -> 6D head poses, teacher forcing) on the shards."""
    _train("audio2pose", shards, out, steps, batch_size, window, lr, seed, workers, gpu, preset, resume, eval_shards,
           checkpoint_every, loader_workers, shuffle_buffer, threads, address)
