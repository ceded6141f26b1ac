"""Encode RGB frames to a reproducible, lossless mp4 with ffmpeg (frames piped, no shell)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from aniportrait.media.cut import BITEXACT
from aniportrait.media.probe import MediaError, check_tool


def encode_rgb_lossless(frames: Iterable[np.ndarray], width: int, height: int, fps: float, out: str | Path) -> int:
    """Write ``frames`` (H, W, 3) uint8 RGB as lossless H.264 RGB (``libx264rgb -qp 0``).

    Lossless, so a decoded frame equals the drawn one exactly (thin coloured pose lines
    would bleed under 4:2:0 chroma subsampling). Returns the number of frames written.
    """
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
            "-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-threads", "1", "-flags:v", "+bitexact",
            "-movflags", "+faststart", *BITEXACT, "-f", "mp4", str(out)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    try:
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise MediaError(f"frame {count} is {frame.shape} {frame.dtype}, expected ({height}, {width}, 3) uint8")
            process.stdin.write(np.ascontiguousarray(frame).tobytes())  # type: ignore[union-attr]
            count += 1
    finally:
        _, stderr = process.communicate()
    check_tool("ffmpeg", f"encode {Path(out).name}", process.returncode, stderr, paths=args)
    return count
