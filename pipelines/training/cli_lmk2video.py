"""``aniportrait-data train stage1|stage2``: the Lmk2Video trainers from the command line.

Imports only typer and rich at start-up; torch loads when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli_common import EXIT_USAGE, console
from pipelines.training.cli_options import (Address, Gpu, LoaderWorkers, Resume, Seed, Shards, Steps, Threads,
                                          Workers)

Out = Annotated[Path, typer.Option(help="Run folder: checkpoints/, the official-format .pth files, train.csv, "
                                           "tb/, config.json.")]
BatchSize = Annotated[int, typer.Option(help="Samples per step and worker.", min=1)]
Size = Annotated[int, typer.Option(help="Training frame size (square, a multiple of 64).", min=64)]
Lr = Annotated[float, typer.Option(help="AdamW learning rate (constant).")]
Preset = Annotated[str, typer.Option("--config", help="Model size: official (SD1.5) or tiny (CPU tests).")]
Precision = Annotated[str, typer.Option(help="Mixed precision: no, bf16, or fp16 (GPU, with loss scaling; "
                                             "the official runs used fp16).")]
Checkpointing = Annotated[bool, typer.Option(help="Gradient checkpointing in both UNets (less memory, slower).")]
CheckpointEvery = Annotated[int, typer.Option(help="Save every N steps, and at the end.", min=1)]
ShuffleBuffer = Annotated[int, typer.Option(help="Samples held by the shuffle buffer.", min=1)]
PerClip = Annotated[int, typer.Option(help="Samples drawn from each clip per epoch.", min=1)]
PoseSource = Annotated[str, typer.Option(help="Pose images: draw (from lmks.npy, default, faster) or video "
                                              "(decode pose.mp4).")]
Vae = Annotated[Optional[str], typer.Option(help="VAE folder (sd-vae-ft-mse); required with --config official.")]
ImageEncoder = Annotated[Optional[str], typer.Option(help="CLIP image encoder folder (sd-image-variations' "
                                                          "image_encoder); required with --config official.")]
BaseUnet = Annotated[Optional[str], typer.Option(help="SD1.5 folder (or its unet/): initial weights of both UNets.")]
Init = Annotated[Optional[str], typer.Option(help="Folder of official-format pose_guider.pth, reference_unet.pth "
                                                  "and denoising_unet.pth to start from.")]
Stage1Init = Annotated[Optional[str], typer.Option("--init", help="Stage 1's output folder (its pose_guider.pth, "
                                                                  "reference_unet.pth, denoising_unet.pth).")]
MotionModule = Annotated[Optional[str], typer.Option(help="AnimateDiff motion weights to start from "
                                                          "(mm_sd_v15_v2.ckpt or a MotionAdapter folder).")]
Window = Annotated[int, typer.Option(help="Frames per training window.", min=2)]


def _run(**values) -> None:
    from pipelines.training.lmk2video import Lmk2VideoTrainConfig, train

    address = values.pop("address")
    try:
        config = Lmk2VideoTrainConfig(**values)
        result = train(config, ray_address=address)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    last = f"{result.losses[-1][1]:.4g}" if result.losses else "-"
    console.print(f"[green]lmk2video stage {values['stage']}[/]: step {result.step}, loss {last}; checkpoint "
                  f"{result.checkpoint}; weights in {values['out']}")


def stage1(shards: Shards, out: Out, vae: Vae = None, image_encoder: ImageEncoder = None, base_unet: BaseUnet = None,
           init: Init = None, steps: Steps = 300_000, batch_size: BatchSize = 2, size: Size = 512, lr: Lr = 1e-5,
           mixed_precision: Precision = "no", gradient_checkpointing: Checkpointing = False, seed: Seed = 0,
           workers: Workers = 1, gpu: Gpu = False, preset: Preset = "official", resume: Resume = False,
           checkpoint_every: CheckpointEvery = 2000, loader_workers: LoaderWorkers = 2,
           shuffle_buffer: ShuffleBuffer = 64, per_clip: PerClip = 1, pose_source: PoseSource = "draw",
           threads: Threads = None, address: Address = None) -> None:
    """Lmk2Video stage 1: denoising UNet, ReferenceNet and PoseGuider on single frames."""
    _run(stage=1, shards=[shards], out=str(out), vae=vae, image_encoder=image_encoder, base_unet=base_unet, init=init,
         steps=steps, batch_size=batch_size, size=size, lr=lr, mixed_precision=mixed_precision,
         gradient_checkpointing=gradient_checkpointing, seed=seed, workers=workers, use_gpu=gpu, model=preset,
         resume=resume, checkpoint_every=checkpoint_every, loader_workers=loader_workers,
         shuffle_buffer=shuffle_buffer, per_clip=per_clip, pose_source=pose_source, threads=threads, address=address)


def stage2(shards: Shards, out: Out, init: Stage1Init = None, motion_module: MotionModule = None, vae: Vae = None,
           image_encoder: ImageEncoder = None, steps: Steps = 40_000, batch_size: BatchSize = 1, window: Window = 16,
           size: Size = 512, lr: Lr = 1e-5, mixed_precision: Precision = "no",
           gradient_checkpointing: Checkpointing = True, seed: Seed = 0, workers: Workers = 1, gpu: Gpu = False,
           preset: Preset = "official", resume: Resume = False, checkpoint_every: CheckpointEvery = 2000,
           loader_workers: LoaderWorkers = 2, shuffle_buffer: ShuffleBuffer = 16, per_clip: PerClip = 1,
           pose_source: PoseSource = "draw", threads: Threads = None, address: Address = None) -> None:
    """Lmk2Video stage 2: the motion modules alone, on 16-frame windows (stride 1, or 4 half the time)."""
    _run(stage=2, shards=[shards], out=str(out), init=init, motion_module=motion_module, vae=vae,
         image_encoder=image_encoder, steps=steps, batch_size=batch_size, window_frames=window, size=size, lr=lr,
         mixed_precision=mixed_precision, gradient_checkpointing=gradient_checkpointing, seed=seed, workers=workers,
         use_gpu=gpu, model=preset, resume=resume, checkpoint_every=checkpoint_every, loader_workers=loader_workers,
         shuffle_buffer=shuffle_buffer, per_clip=per_clip, pose_source=pose_source, threads=threads, address=address)
