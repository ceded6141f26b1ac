"""Inference throughput per step: frames/s of Audio2Lmk, Lmk2Video and the whole job.

Runs the same two steps as ``aniportrait-data infer`` (prepare, then animate) in this
process, without Ray, on a real portrait and real speech looped to ``--seconds``: a 1 s
warm-up job first (CUDA kernels, caches), then ``--repeats`` measured jobs. Full models
at 512x512 and 25 steps need the weights and a GPU:

    python benchmarks/bench_infer_gpu.py --mesh-ckpt audio2mesh.pt --pose-ckpt audio2pose.pt \\
        --lmk2video-weights pretrained/ [--wav2vec2 wav2vec2-base-960h] [--seconds 10]

Without the weights, ``--random-weights`` builds the official architectures (SD1.5-sized
UNets, VAE, CLIP ViT-L image encoder, wav2vec2-base Audio2Mesh/Audio2Pose) with random
weights: the same throughput, meaningless pictures. ``--tiny`` uses the tiny random models
on CPU at 64x64 and 3 steps (a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "fixtures" / "media"


def cut_speech(source: Path, seconds: float, out: Path) -> Path:
    """``seconds`` of ``source`` (looped when shorter) as 16 kHz mono wav."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                    "-t", f"{seconds}", "-ac", "1", "-ar", "16000", str(out)], check=True)
    return out


def official_random(device: str) -> tuple:
    """Audio2Lmk and Lmk2Video of the official sizes with random weights (fp16 on a GPU)."""
    import torch

    from models.audio2mesh import Audio2MeshModel
    from models.audio2pose import Audio2PoseModel
    from models.lmk2video import Lmk2VideoConfig, add_motion_modules, build_models
    from pipelines.inference.audio2lmk import Audio2Lmk
    from pipelines.inference.lmk2video import Lmk2Video

    config = Lmk2VideoConfig.official()
    models = build_models(config)
    add_motion_modules(models.denoising_unet, config)
    dtype = torch.float32 if device == "cpu" else torch.float16
    audio2lmk = Audio2Lmk(Audio2MeshModel(**Audio2MeshModel.official_config()),
                          Audio2PoseModel(**Audio2PoseModel.official_config()), device=device)
    return audio2lmk, Lmk2Video(models, config, device, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mesh-ckpt")
    parser.add_argument("--pose-ckpt")
    parser.add_argument("--wav2vec2")
    parser.add_argument("--lmk2video-weights")
    parser.add_argument("--tiny", action="store_true", help="tiny random models, CPU, 64x64, 3 steps")
    parser.add_argument("--random-weights", action="store_true", help="official sizes, random weights")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--portrait", type=Path, default=MEDIA / "portrait_lyl.png")
    parser.add_argument("--audio", type=Path, default=MEDIA / "speech_lyl.wav")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (as a one-CPU Ray actor)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from pipelines.inference.batch import AnimateJob, InferSettings, PrepareJob
    from pipelines.inference.jobs import Job

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size, steps = (64, 3) if args.tiny else (args.size, args.steps)
    settings = InferSettings(size=size, steps=steps, tiny_random=args.tiny or args.random_weights,
                             mesh_ckpt=args.mesh_ckpt, pose_ckpt=args.pose_ckpt, wav2vec2=args.wav2vec2,
                             lmk2video_weights=args.lmk2video_weights)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        prepare, animate = PrepareJob(settings), AnimateJob(settings, folder, device)
        if args.random_weights:
            animate.models = official_random(device)
        lmk2video = animate.models[1]  # loads them
        models = "official sizes, random weights" if args.random_weights else settings.models
        print(f"models ({models}) on {device}: loaded in {time.perf_counter() - started:.1f} s "
              f"({lmk2video.dtype}); {size}x{size}, {steps} steps, guidance {settings.guidance}")
        runs = []
        for index, seconds in enumerate([1.0] + [args.seconds] * args.repeats):
            audio = cut_speech(args.audio, seconds, Path(folder) / f"speech_{index}.wav")
            job = Job(job_id=f"bench{index}", name=f"bench{index}", portrait=str(args.portrait), audio=str(audio))
            started = time.perf_counter()
            prepared = prepare(job, None)
            prepare_s = time.perf_counter() - started
            facts = animate(job, prepared)
            total = time.perf_counter() - started
            frames = facts["frames"]
            line = (f"{'warm-up' if index == 0 else f'run {index}'}: {frames} frames ({seconds:g} s audio): "
                    f"prepare {prepare_s:.2f} s, Audio2Lmk+pose images {facts['motion_s']:.2f} s "
                    f"({frames / facts['motion_s']:.1f} frames/s), Lmk2Video {facts['video_s']:.2f} s "
                    f"({frames / facts['video_s']:.2f} frames/s), encode {facts['encode_s']:.2f} s; "
                    f"whole job {frames / total:.2f} frames/s")
            print(line)
            if index:
                runs.append((frames / facts["video_s"], frames / total))
        if device == "cuda":
            print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        print(f"median over {len(runs)} run(s): Lmk2Video {statistics.median(r[0] for r in runs):.2f} frames/s, "
              f"whole job {statistics.median(r[1] for r in runs):.2f} frames/s")


if __name__ == "__main__":
    main()
