"""``aniportrait-data infer``: a job table -> talking-portrait videos, on Ray.

Exit codes: 0 every job has its video (made now or already done); 3 some jobs failed
(the others are written; ``jobs_report.parquet`` gives each failure's step and reason);
2 a usage or set-up error (unreadable job table, missing weights, models that do not
load, ffmpeg missing): nothing was made. torch loads only inside the workers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli_common import EXIT_USAGE, console


def infer(
    jobs: Annotated[Path, typer.Option(help="Job table (.parquet or .csv): portrait and audio (or source_video) per row; optional job_id, pose_video, seed, steps, pose_id. Relative paths are relative to the table.")],
    out: Annotated[Path, typer.Option(help="Output folder: <job>.mp4, <job>.done.json and jobs_report.parquet (on a cluster, a folder every node mounts).")],
    gpus: Annotated[Optional[int], typer.Option(help="GPU actors for Lmk2Video (default: every GPU of the Ray cluster; 0 runs on CPU).", min=0)] = None,
    workers: Annotated[Optional[int], typer.Option(help="CPU actors: the prepare step, and without GPUs every step (default: all CPUs of the cluster).", min=1)] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (auto, host:6379, ray://host:10001); default starts a local Ray.")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps (a job's steps column overrides it).", min=1)] = 25,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.", min=0)] = 3.5,
    size: Annotated[int, typer.Option(help="Output width and height in pixels (a multiple of 8).", min=8)] = 512,
    seed: Annotated[int, typer.Option(help="Sampling seed (a job's seed column overrides it).", min=0)] = 42,
    mesh_ckpt: Annotated[Optional[Path], typer.Option(help="Audio2Mesh weights (official audio2mesh.pt or a trained checkpoint).")] = None,
    pose_ckpt: Annotated[Optional[Path], typer.Option(help="Audio2Pose weights (official audio2pose.pt or a trained checkpoint).")] = None,
    wav2vec2: Annotated[Optional[str], typer.Option(help="wav2vec2 folder for checkpoints that do not hold their own encoder.")] = None,
    lmk2video_weights: Annotated[Optional[Path], typer.Option(help="Lmk2Video weights folder (denoising_unet.pth, reference_unet.pth, pose_guider.pth, motion_module.pth and the base models).")] = None,
    face_model: Annotated[Optional[Path], typer.Option(help="MediaPipe face_landmarker .task file (default: the one shipped).")] = None,
    pose_feed: Annotated[Optional[str], typer.Option(help="How pose images reach the PoseGuider: official (2v-1 of the uint8 pixels, as the official audio2vid.py) or unit ([-1,1], as training). Default: the weights' own, official for the official files, unit for weights trained here.")] = None,
    pose_scale: Annotated[Optional[float], typer.Option(help="Scale of Audio2Pose's head rotations. Default: the pose checkpoint's, 0.5 for the official audio2pose.pt (its script's halving), 1.0 for checkpoints trained here.")] = None,
    pose_smooth: Annotated[Optional[int], typer.Option(help="Smoothing window (frames) of Audio2Pose's head poses. Default: the pose checkpoint's (official 7).", min=1)] = None,
    pose_id: Annotated[Optional[int], typer.Option(help="Audio2Pose identity (head-motion style) of every audio job; a job's pose_id column overrides it. Default: drawn from each job's seed.", min=0)] = None,
    tiny_random: Annotated[bool, typer.Option("--tiny-random", help="Use tiny untrained models (tests and demos: the videos are noise).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Animate portraits from audio (or reenact them from a video): one mp4 per job, with its audio."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", force=True)
    from aniportrait.media.probe import missing_ffmpeg
    from pipelines.inference.batch import TINY_WARNING, InferSettings, InferSetupError, run_infer
    from pipelines.inference.jobs import JobTableError, read_jobs
    from pipelines.inference.report import throughput_table
    from pipelines.runtime import ray_of_this_command

    try:
        missing = missing_ffmpeg()
        if missing:
            raise InferSetupError(missing)
        table = read_jobs(jobs)
        settings = InferSettings(
            size=size, steps=steps, guidance=guidance, seed=seed, tiny_random=tiny_random,
            mesh_ckpt=_text(mesh_ckpt), pose_ckpt=_text(pose_ckpt), wav2vec2=wav2vec2,
            lmk2video_weights=_text(lmk2video_weights), face_model=_text(face_model), pose_feed=pose_feed,
            pose_scale=pose_scale, pose_smooth=pose_smooth, pose_id=pose_id)
        if face_model is not None and not face_model.is_file():
            raise InferSetupError(f"--face-model {face_model} not found")
        if tiny_random:
            console.print(f"[bold red]{TINY_WARNING}[/]")
        console.print(f"{len(table)} job(s) from {jobs}")
        with ray_of_this_command():
            result = run_infer(table, str(out.resolve()), settings, address=address, workers=workers, gpus=gpus,
                               console=console)
    except (InferSetupError, JobTableError) as exc:
        # from a worker it arrives as Ray's RayTaskError(InferSetupError): its cause's first line
        message = str(exc.cause).splitlines()[0] if hasattr(exc, "cause") else str(exc)
        console.print(f"[bold red]error:[/] {message}")
        raise typer.Exit(EXIT_USAGE) from exc
    console.print(throughput_table(result))
    for row in result.rows:
        if row["error"]:
            console.print(f"[red]failed[/] {row['job_id']}: {row['error']}", soft_wrap=True)
    if tiny_random:
        console.print(f"[bold red]{TINY_WARNING}[/]")
    if result.exit_code:
        console.print(f"[yellow]{result.failed} of {len(result.rows)} jobs failed[/] (reasons above and in "
                      f"{out}/jobs_report.parquet); exit code {result.exit_code}")
        raise typer.Exit(result.exit_code)
    console.print(f"[green]all {len(result.rows)} videos[/] in {out}")


def _text(path: Path | None) -> str | None:
    return str(path.expanduser().resolve()) if path is not None else None
