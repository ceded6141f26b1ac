"""Read a media file's streams with ffprobe (argument lists, never a shell)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


class MediaError(RuntimeError):
    """A media file could not be read or written; the message says which and why.

    ``reason`` is the manifest's reason code (see :mod:`aniportrait.reasons`).
    """

    def __init__(self, message: str, reason: str = "media_error") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason when the error crosses processes
        return type(self), (str(self), self.reason)


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What the clip stage needs to know about a source video.

    ``width``/``height`` are the displayed size (rotation applied), as ffmpeg's filters
    see the frames after autorotation.
    """

    width: int
    height: int
    fps: float
    duration_s: float
    video_codec: str
    rotation: int
    has_audio: bool
    audio_duration_s: float | None
    audio_sample_rate: int | None


#: ffmpeg 5 exits 0 when it cannot finish writing an output (a full disk); these lines of
#: its error log say so.
OUTPUT_WRITE_ERRORS = ("Error writing trailer", "Error closing file")


def missing_ffmpeg() -> str | None:
    """Why ffmpeg cannot run here (ffmpeg or ffprobe not on PATH), or None when both are there."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if not missing:
        return None
    return f"{' and '.join(missing)} not found on PATH; install ffmpeg (apt-get install ffmpeg)"


_ADDRESS = re.compile(r" @ 0x[0-9a-f]+")


def log_lines(stderr: bytes, paths: Iterable[str] = ()) -> list[str]:
    """The non-empty lines of an ffmpeg/ffprobe log without machine-specific parts (they go
    into manifests, which must not depend on the machine): object addresses are removed and
    each of ``paths`` is shortened to its file name."""
    text = stderr.decode("utf-8", "replace")
    for path in sorted((p for p in paths if os.sep in p), key=len, reverse=True):
        text = text.replace(path, Path(path).name)
    return [_ADDRESS.sub("", line).strip() for line in text.splitlines() if line.strip()]


def check_tool(tool: str, what: str, returncode: int, stderr: bytes, reason: str = "media_error",
               paths: Iterable[str] = ()) -> None:
    """Raise :class:`MediaError` with the stderr tail (see :func:`log_lines`) when ``tool``
    failed or could not write."""
    lines = log_lines(stderr, paths)
    if returncode != 0 or any(error in line for line in lines for error in OUTPUT_WRITE_ERRORS):
        raise MediaError(f"{tool} failed to {what}: {' | '.join(lines[-3:]) or 'no message'}", reason)


def run_tool(args: list[str], what: str, reason: str = "media_error") -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg/ffprobe argument list; raise :class:`MediaError` (with ``reason``) and its stderr tail."""
    try:
        done = subprocess.run(args, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise MediaError(f"{args[0]} is not installed (needed to {what})") from exc
    check_tool(args[0], what, done.returncode, done.stderr, reason, args)
    return done


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = stream.get("tags", {}).get("rotate")
    return int(tag) % 360 if tag else 0


def _fps(stream: dict) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        text = stream.get(key) or "0/0"
        num, _, den = text.partition("/")
        if den and int(den) != 0 and int(num) != 0:
            return float(Fraction(int(num), int(den)))
    return 0.0


def probe(path: str | Path) -> MediaInfo:
    """Probe ``path``: size, fps, duration, rotation and audio of its first streams."""
    done = run_tool(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        f"read {Path(path).name}", "unreadable_source",
    )
    data = json.loads(done.stdout or b"{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover(s)), None)
    if video is None:
        raise MediaError(f"{Path(path).name} has no video stream", "no_video_stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    rotation = _rotation(video)
    width, height = int(video["width"]), int(video["height"])
    if rotation in (90, 270):
        width, height = height, width
    duration = float(video.get("duration") or data.get("format", {}).get("duration") or 0.0)
    return MediaInfo(
        width=width,
        height=height,
        fps=_fps(video),
        duration_s=duration,
        video_codec=str(video.get("codec_name")),
        rotation=rotation,
        has_audio=audio is not None,
        audio_duration_s=float(audio["duration"]) if audio and audio.get("duration") else None,
        audio_sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
    )


def _is_cover(stream: dict) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def count_video_frames(path: str | Path) -> int:
    """Exact number of video frames (packets) in ``path``."""
    done = run_tool(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        f"count frames of {Path(path).name}",
    )
    return int(done.stdout.decode().strip().split(",")[0])


def tool_version(tool: str = "ffmpeg") -> str:
    """First line of ``tool -version`` (recorded in release manifests)."""
    return run_tool([tool, "-version"], "report its version").stdout.decode().splitlines()[0].strip()
