"""``aniportrait-data predict-landmarks``: audio + portrait -> per-frame landmarks and a pose video.

The Audio2Lmk half of inference. Writes into ``--out``: ``pose.mp4`` (the lip-coloured
pose images, lossless RGB H.264, as the shards' ``pose.mp4``), ``lmks2d.npy`` (T,468,2
pixels), ``pose6d.npy`` (T,6) and ``mesh.npy`` (T,468,3), each atomically.
Exit codes: 0 done; 2 a usage or set-up error (missing file or weights, no face in the
portrait, unreadable audio, models that do not load). torch loads inside the command.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipelines.cli_common import EXIT_USAGE, console

TINY_WARNING = ("TINY RANDOM MODELS (--tiny-random): the landmarks come from untrained models, "
                "made to test the pipeline, not real predictions")


def predict_landmarks(
    audio: Annotated[Path, typer.Option(help="Speech (any audio or video file ffmpeg reads); resampled to 16 kHz mono.")],
    portrait: Annotated[Path, typer.Option(help="Portrait image; resized to --size x --size as the official scripts do.")],
    out: Annotated[Path, typer.Option(help="Output folder for pose.mp4, lmks2d.npy, pose6d.npy and mesh.npy.")],
    mesh_ckpt: Annotated[Optional[Path], typer.Option(help="Audio2Mesh weights (official audio2mesh.pt or a trained checkpoint).")] = None,
    pose_ckpt: Annotated[Optional[Path], typer.Option(help="Audio2Pose weights (official audio2pose.pt or a trained checkpoint).")] = None,
    wav2vec2: Annotated[Optional[str], typer.Option(help="wav2vec2 folder or hub id for checkpoints that hold no encoder of their own.")] = None,
    pose_video: Annotated[Optional[Path], typer.Option(help="Take the head motion from this video (relative to its first frame) instead of Audio2Pose.")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second of the landmarks and the pose video.", min=1)] = 30.0,
    size: Annotated[int, typer.Option(help="Width and height of the pose video in pixels.", min=16)] = 512,
    pose_id: Annotated[int, typer.Option(help="Audio2Pose identity (head-motion style), 0..99.", min=0)] = 0,
    pose_scale: Annotated[Optional[float], typer.Option(help="Scale of Audio2Pose's head rotations. Default: the pose checkpoint's, 0.5 for the official audio2pose.pt (its script's halving), 1.0 for checkpoints trained here.")] = None,
    pose_smooth: Annotated[Optional[int], typer.Option(help="Smoothing window (frames) of Audio2Pose's head poses. Default: the pose checkpoint's (official 7).", min=1)] = None,
    face_model: Annotated[Optional[Path], typer.Option(help="MediaPipe face_landmarker .task file (default: the one shipped).")] = None,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    tiny_random: Annotated[bool, typer.Option("--tiny-random", help="Use tiny untrained models (tests and demos: the landmarks are noise).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    """Predict a talking head's landmarks from audio and a portrait; draw them as a pose video."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", force=True)
    if tiny_random:
        console.print(f"[bold red]{TINY_WARNING}[/]")
    try:
        written = _predict(audio, portrait, out, mesh_ckpt, pose_ckpt, wav2vec2, pose_video, fps, size, pose_id,
                           face_model, device, tiny_random, {"pose_scale": pose_scale, "pose_smooth": pose_smooth})
    except (OSError, ValueError, RuntimeError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc
    console.print(f"[green]{written} frames[/] ({written / fps:.2f} s at {fps:g} fps) in {out}: "
                  "pose.mp4, lmks2d.npy, pose6d.npy, mesh.npy")
    if tiny_random:
        console.print(f"[bold red]{TINY_WARNING}[/]")


def _predict(audio: Path, portrait: Path, out: Path, mesh_ckpt: Path | None, pose_ckpt: Path | None,
             wav2vec2: str | None, pose_video: Path | None, fps: float, size: int, pose_id: int,
             face_model: Path | None, device: str, tiny_random: bool, post: dict[str, Any]) -> int:
    """Run Audio2Lmk and write the outputs; returns the number of frames. ``post`` overrides the
    pose checkpoint's head-pose post-processing (``pose_scale``, ``pose_smooth``; None keeps it)."""
    import numpy as np

    from aniportrait.audio import frame_count, load_audio
    from aniportrait.format import POSE_VIDEO
    from aniportrait.media.encode import encode_rgb_lossless
    from aniportrait.media.probe import missing_ffmpeg
    from aniportrait.storage import local_atomic_path, write_local_atomic
    from pipelines.inference.audio2lmk import Audio2Lmk, iter_pose_images, portrait_face
    from pipelines.inference.batch import read_portrait

    missing = missing_ffmpeg()
    if missing:
        raise RuntimeError(missing)
    if not tiny_random and (mesh_ckpt is None or pose_ckpt is None):
        raise ValueError("pass --mesh-ckpt and --pose-ckpt (or --tiny-random for a test run)")
    for flag, path in (("--audio", audio), ("--pose-video", pose_video), ("--face-model", face_model)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{flag} {path} not found")
    model_file = str(face_model) if face_model else None
    image = read_portrait(str(portrait), size)
    face = portrait_face(image, model_file)
    wave = load_audio(audio)
    if len(wave) == 0:
        raise ValueError(f"the audio {audio.name} is empty")
    pose = None
    if pose_video is not None:
        pose = _video_pose(pose_video, frame_count(len(wave), fps), fps, model_file)
    if tiny_random:
        models = Audio2Lmk.random_tiny(seed=0, wav2vec2_dir=wav2vec2, **post)
    else:
        models = Audio2Lmk.from_checkpoints(str(mesh_ckpt), str(pose_ckpt), wav2vec2=wav2vec2, device=device, **post)
    motion = models.motion(wave, face, fps=fps, pose=pose, pose_id=pose_id)

    out.mkdir(parents=True, exist_ok=True)
    with local_atomic_path(out / POSE_VIDEO.name) as tmp:  # the shards' pose video, under its member name
        written = encode_rgb_lossless(iter_pose_images(motion.lmks2d, size, size), size, size, fps, tmp)
    for name, array in (("lmks2d", motion.lmks2d), ("pose6d", motion.pose6d), ("mesh", motion.mesh)):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_local_atomic(out / f"{name}.npy", buffer.getvalue())
    return written


def _video_pose(video: Path, frames: int, fps: float, face_model: str | None):  # -> np.ndarray (frames, 6)
    """Head poses of a pose reference video, as the official ``pose_temp`` (see ``reenact.reference_pose``)."""
    from aniportrait.face import DEFAULT_MODEL
    from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings
    from pipelines.inference.reenact import reference_pose

    runner = FaceLandmarkerRunner(LandmarkerSettings(model_path=face_model or str(DEFAULT_MODEL)))
    return reference_pose(video, runner, frames, fps)
