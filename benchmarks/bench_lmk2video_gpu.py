"""Lmk2Video training step on a GPU: time per step and peak memory, full 512x512 models.

Builds the official-size models (SD1.5 ReferenceNet + denoising UNet, PoseGuider(320),
sd-vae-ft-mse-sized VAE, CLIP ViT-L/14 image encoder) with random weights directly on the
device and runs the real trainer step (:class:`pipelines.training.lmk2video.Lmk2VideoTrainer`:
VAE encodes, CLIP embedding, PoseGuider, ReferenceNet + reference attention, denoising UNet,
min-SNR v-loss, backward, AdamW) on random uint8 batches. It prints the median seconds per
step after ``--warmup`` steps, samples/s, the peak allocated and reserved GPU memory, and
the trainable parameter count. It asserts nothing about time.

    python benchmarks/bench_lmk2video_gpu.py [--stage 1] [--batch-size 2] [--size 512]
        [--mixed-precision fp16|bf16|no] [--gradient-checkpointing] [--steps 6] [--warmup 2]
    python benchmarks/bench_lmk2video_gpu.py --device cpu --tiny --threads 1   # smoke run without a GPU

Stage 2 (``--stage 2``) adds the motion modules and times 16-frame windows (``--frames``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.lmk2video import add_motion_modules, build_models
from pipelines.training.lmk2video import Lmk2VideoTrainConfig, Lmk2VideoTrainer


def random_batch(stage: int, batch_size: int, size: int, frames: int, generator: torch.Generator) -> dict:
    """A batch shaped as the stage's decoder items (uint8, (3,H,W) images)."""
    def images(*shape: int) -> torch.Tensor:
        return torch.randint(0, 256, (*shape, 3, size, size), dtype=torch.uint8, generator=generator)

    if stage == 1:
        return {"target": images(batch_size), "reference": images(batch_size), "pose": images(batch_size)}
    return {"frames": images(batch_size, frames), "poses": images(batch_size, frames), "reference": images(batch_size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models at 64x64 (a CPU smoke run)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1)
    parser.add_argument("--size", type=int, default=None, help="frame size (default 512, 64 with --tiny)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 (stage 1), 1 (stage 2)")
    parser.add_argument("--frames", type=int, default=16, help="frames per stage-2 window")
    parser.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                        help="default: fp16 on CUDA (official), no on CPU")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (64 if args.tiny else 512)
    batch_size = args.batch_size or (2 if args.stage == 1 else 1)
    precision = args.mixed_precision or ("fp16" if cuda else "no")
    config = Lmk2VideoTrainConfig(stage=args.stage, shards=[], out="", model="tiny" if args.tiny else "official",
                                  size=size, batch_size=batch_size, mixed_precision=precision,
                                  gradient_checkpointing=args.gradient_checkpointing, window_frames=args.frames,
                                  use_gpu=cuda)
    torch.manual_seed(0)
    started = time.perf_counter()
    with device:
        models = build_models(config.model_config())
        if args.stage == 2:
            add_motion_modules(models.denoising_unet, config.model_config())
    trainer = Lmk2VideoTrainer(config, models, device)
    built = time.perf_counter() - started
    trainable = sum(p.numel() for p in trainer.trainable)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(args.stage, batch_size, size, args.frames, generator)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize(device)
            if step == args.warmup:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        losses.append(trainer.train_step(batch, step))
        if cuda:
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    samples = batch_size * (1 if args.stage == 1 else args.frames)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device {name}; stage {args.stage}; {'tiny' if args.tiny else 'official'} models; {size}x{size}; "
          f"batch {batch_size}{'' if args.stage == 1 else f' x {args.frames} frames'}; mixed precision {precision}; "
          f"gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"built in {built:.1f} s; trainable parameters {trainable / 1e6:.1f} M")
    print(f"step: median {median:.3f} s (min {min(times):.3f}, max {max(times):.3f}) over {len(times)} steps after "
          f"{args.warmup} warm-up; {samples / median:.2f} frames/s; losses {', '.join(f'{v:.3f}' for v in losses)}")
    if cuda:
        print(f"peak memory: allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB, "
              f"reserved {torch.cuda.max_memory_reserved(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
