"""Files a batch-inference job leaves in ``--out``: its video (with audio) and its done marker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.ids import contained_join
from aniportrait.media.encode import encode_rgb_frames, h264_yuv420p
from aniportrait.media.probe import MediaError
from aniportrait.storage import local_atomic_path
from pipelines.inference.jobs import Job


def output_path(out: str, job: Job) -> str:
    """``<out>/<job name>.mp4`` (the name is a safe id: it cannot leave ``out``)."""
    return contained_join(out, f"{job.name}.mp4")


def marker_path(out: str, job: Job) -> str:
    """The done marker, written after the video: ``<out>/<job name>.done.json``."""
    return contained_join(out, f"{job.name}.done.json")


def write_video(frames: np.ndarray, fps: float, out: str | Path, *, audio: str | None = None,
                audio_seconds: float | None = None, crf: int = 18) -> None:
    """Encode ``frames`` (T,H,W,3) uint8 RGB to H.264 (yuv420p) at ``fps``, with the first
    audio stream of ``audio`` as AAC (cut to ``audio_seconds`` when given), atomically."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise MediaError(f"expected (T,H,W,3) uint8 frames with T >= 1, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    inputs, options = [], []
    if audio:
        inputs = ["-i", str(audio)]
        options = ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
        if audio_seconds is not None:
            options += ["-t", f"{audio_seconds:.6f}"]
    with local_atomic_path(out) as tmp:
        encode_rgb_frames(frames, width, height, fps, tmp, [*options, *h264_yuv420p(crf)], inputs=inputs,
                          what=f"write {Path(out).name}")


def read_marker(out: str, job: Job) -> dict[str, Any] | None:
    """The done marker of ``job``, if there is one and its video is there too."""
    path = Path(marker_path(out, job))
    if not path.is_file() or not Path(output_path(out, job)).is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
