"""Real test videos for the ``folder`` dataset, made with ffmpeg from ``../shared`` media."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bad_media import cut_bytes

X264 = ["-c:v", "libx264", "-preset", "veryfast", "-threads", "1"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def two_speakers(media: Path, out: Path) -> Path:
    """4 s of the LYL face joined to 5 s of another person (``head_pose_ref``): the join at 4.0 s."""
    graph = ("[0:v]trim=0:4,setpts=PTS-STARTPTS,scale=512:512,fps=25,setsar=1[v0];"
             "[0:a]atrim=0:4,asetpts=PTS-STARTPTS,aresample=48000,aformat=channel_layouts=stereo[a0];"
             "[1:v]setpts=PTS-STARTPTS,fps=25,setsar=1[v1];[1:a]asetpts=PTS-STARTPTS,aformat=channel_layouts=stereo[a1];"
             "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]")
    _ffmpeg("-i", str(media / "talking_lyl_7s.mp4"), "-i", str(media / "head_pose_ref.mp4"), "-filter_complex", graph,
            "-map", "[v]", "-map", "[a]", *X264, "-c:a", "aac", str(out))
    return out


def face_gap(media: Path, out: Path) -> Path:
    """The LYL clip (7.77 s) with its picture blacked out from 3.0 to 4.0 s: no face for a second."""
    _ffmpeg("-i", str(media / "talking_lyl_7s.mp4"), "-vf", "drawbox=enable='between(t,3,4)':color=black:t=fill",
            *X264, "-c:a", "copy", str(out))
    return out


def joined(media: Path, out: Path) -> Path:
    """The LYL clip twice in a row (15.5 s, one shot as far as a scene detector can tell)."""
    clip = str(media / "talking_lyl_7s.mp4")
    _ffmpeg("-i", clip, "-i", clip, "-filter_complex", "[0:v][0:a][1:v][1:a]concat=n=2:v=1:a=1[v][a]",
            "-map", "[v]", "-map", "[a]", *X264, "-c:a", "aac", str(out))
    return out


def cut_short(video: Path, out: Path, fraction: float) -> Path:
    """``video`` with its index first (``+faststart``, as web exports have it) and only the first
    ``fraction`` of its bytes, as an interrupted copy leaves it: readable, but it stops decoding
    part-way while it still declares its whole duration."""
    whole = out.with_suffix(".whole" + out.suffix)
    _ffmpeg("-i", str(video), "-c", "copy", "-movflags", "+faststart", str(whole))
    cut_bytes(whole, out, fraction)
    return out
