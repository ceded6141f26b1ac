"""Encode RGB frames to a video with ffmpeg (frames piped to its stdin, argument lists, no shell).

:func:`encode_rgb_frames` is the one place that spawns such an ffmpeg; its callers give
only what differs: extra inputs (an audio file), the codec/quality and mapping options
and the container. :func:`encode_rgb_lossless` (the render stage's ``pose.mp4``) is one
of them; the preview's overlay mp4 and the inference video use :func:`h264_yuv420p`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from aniportrait.media.cut import BITEXACT
from aniportrait.media.probe import MediaError, check_tool

#: Options of the lossless RGB H.264 the render stage writes (``libx264rgb -qp 0``, bit-exact).
#: Chosen by ``benchmarks/bench_stages.py`` on real 512x512 pose images: ``ultrafast`` with
#: CABAC, 3 reference frames and 8x8 partitions back on encodes 1.5-1.8x faster than
#: ``veryfast`` and 10-14% smaller (plain ``ultrafast``: 2-2.5x faster, 2.7x the bytes).
#: Any preset at ``-qp 0`` is lossless.
LOSSLESS_RGB = ["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast",
                "-x264-params", "cabac=1:ref=3:partitions=p8x8", "-threads", "1",
                "-flags:v", "+bitexact", "-movflags", "+faststart", *BITEXACT]


def h264_yuv420p(crf: int) -> list[str]:
    """Options of a playable H.264 (yuv420p) at quality ``crf``, ``moov`` atom first."""
    return ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", "veryfast",
            "-movflags", "+faststart"]


def encode_rgb_frames(frames: Iterable[np.ndarray], width: int, height: int, fps: float, out: str | Path,
                      options: Sequence[str], *, inputs: Sequence[str] = (), container: str = "mp4",
                      what: str | None = None) -> int:
    """Pipe ``frames`` ((H, W, 3) uint8 RGB, checked one by one) to ffmpeg as raw rgb24 input 0.

    The command is ``ffmpeg <raw rgb24 from stdin> <inputs> <options> -f <container> <out>``:
    ``inputs`` adds inputs (``["-i", wav]`` is input 1), ``options`` holds the mapping, codec
    and quality options. A frame of another shape or dtype raises :class:`MediaError`, as does
    a failed ffmpeg (``what`` names the job in the message, "encode <out name>" by default;
    paths in its log are shortened to file names). Returns the number of frames written:
    fewer than sent when ffmpeg stopped reading early without failing (an output ``-t``).
    """
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
            *inputs, *options, "-f", container, str(out)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    try:
        for frame in frames:
            if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                raise MediaError(f"frame {count} is {frame.shape} {frame.dtype}, expected ({height}, {width}, 3) uint8")
            process.stdin.write(np.ascontiguousarray(frame).tobytes())  # type: ignore[union-attr]
            count += 1
    except BrokenPipeError:
        pass  # ffmpeg stopped reading (failed, or an output ``-t`` was reached): checked below
    finally:
        _, stderr = process.communicate()
    check_tool("ffmpeg", what or f"encode {Path(out).name}", process.returncode, stderr, paths=args)
    return count


def encode_rgb_lossless(frames: Iterable[np.ndarray], width: int, height: int, fps: float, out: str | Path) -> int:
    """Write ``frames`` (H, W, 3) uint8 RGB as lossless H.264 RGB (``libx264rgb -qp 0``).

    Lossless, so a decoded frame equals the drawn one exactly (thin coloured pose lines
    would bleed under 4:2:0 chroma subsampling). Returns the number of frames written.
    """
    return encode_rgb_frames(frames, width, height, fps, out, LOSSLESS_RGB)
