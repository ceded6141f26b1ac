"""Cut, crop, resize and resample one clip with a single ffmpeg call.

The output is reproducible: same source, span and settings give the same bytes
(bit-exact flags, no metadata, one encoder thread, a fixed x264 preset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from aniportrait.crop import PixelBox
from aniportrait.media.probe import MediaError, count_video_frames, log_lines, run_tool

AUDIO_RATE = 16_000
BITEXACT = ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact"]


@dataclass(frozen=True, slots=True)
class CutSettings:
    """Output format of every clip: square ``size``, ``fps``, x264 ``crf``/``preset``."""

    size: int = 512
    fps: float = 30.0
    crf: int = 18
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError(f"clip size must be an even number >= 16, got {self.size}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must be within 1..120, got {self.fps}")


@dataclass(frozen=True, slots=True)
class CutPlan:
    """Where to start in the source, how many output frames and audio samples to write."""

    seek_s: float
    audio_skip_samples: int
    frames: int
    audio_samples: int
    box: PixelBox
    with_audio: bool

    @property
    def duration_s(self) -> float:
        return self.audio_samples / AUDIO_RATE


def plan_cut(
    start_s: float, end_s: float, box: PixelBox, settings: CutSettings, *, source_duration_s: float,
    with_audio: bool, seek_back_s: float = 0.0,
) -> CutPlan:
    """Plan a cut of ``[start_s, end_s)``, checked against the source's length.

    A span that starts at or after the end of the source, or ends more than one output
    frame past it, raises :class:`MediaError` (reason ``span_out_of_range``): a clip is
    never shortened silently. Within that one frame the end is the source's end.
    ``seek_back_s`` moves the seek point earlier (half a source frame for frame spans,
    so the first wanted frame is never lost to timestamp rounding).
    """
    end = end_s
    if source_duration_s > 0:
        where = f"span {start_s:.3f}-{end_s:.3f} s"
        if start_s >= source_duration_s:
            raise MediaError(f"{where} starts after the end of the {source_duration_s:.3f} s source",
                             "span_out_of_range")
        if end_s - source_duration_s > 1.0 / settings.fps + 1e-6:
            raise MediaError(f"{where} ends {end_s - source_duration_s:.3f} s past the end of the "
                             f"{source_duration_s:.3f} s source (more than one output frame)", "span_out_of_range")
        end = min(end_s, source_duration_s)
    frames = math.floor((end - start_s) * settings.fps + 1e-6)
    if frames < 1:
        raise MediaError(f"span {start_s:.3f}-{end_s:.3f} s holds no output frame at {settings.fps:g} fps",
                         "span_out_of_range")
    samples = round(frames * AUDIO_RATE / settings.fps)
    seek = max(0.0, start_s - seek_back_s)
    return CutPlan(seek, round((start_s - seek) * AUDIO_RATE), frames, samples, box, with_audio)


def video_filter(box: PixelBox, settings: CutSettings) -> str:
    """The ``-vf`` chain: deinterlace flagged frames, resample fps, pad (a box beyond the
    frame, see :class:`PixelBox`), crop, fill-resize.

    Timestamps restart at zero first, so the fps filter never sits on a rounding edge.
    """
    s = settings.size
    left, top, right, bottom = box.border
    pad = [f"pad=iw+{left + right}:ih+{top + bottom}:{left}:{top}:color=black"] if any(box.border) else []
    return ",".join([
        "bwdif=deint=interlaced",
        "setpts=PTS-STARTPTS",
        f"fps={settings.fps:g}",
        *pad,
        f"crop={box.w}:{box.h}:{box.x + left}:{box.y + top}",
        f"scale={s}:{s}:force_original_aspect_ratio=increase:flags=bicubic",
        f"crop={s}:{s}",
        "setsar=1",
        "format=yuv420p",
    ])


def audio_filter(plan: CutPlan) -> str:
    """The ``-af`` chain: 16 kHz keeping sync, skip the seek margin, exact sample count."""
    n = plan.audio_samples
    chain = [f"aresample={AUDIO_RATE}:async=1:first_pts=0"]
    if plan.audio_skip_samples:
        chain += [f"atrim=start_sample={plan.audio_skip_samples}", "asetpts=N/SR/TB"]
    return ",".join(chain + [f"apad=whole_len={n}", f"atrim=end_sample={n}"])


def ffmpeg_cut_args(source: str, video_out: str, audio_out: str | None, plan: CutPlan,
                    settings: CutSettings) -> list[str]:
    """The ffmpeg argument list writing ``video_out`` (mp4, no audio) and ``audio_out`` (wav)."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-ss", f"{plan.seek_s:.6f}", "-i", source]
    args += ["-map", "0:v:0", "-vf", video_filter(plan.box, settings), "-frames:v", str(plan.frames),
             "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf),
             "-threads", "1", "-flags:v", "+bitexact", "-movflags", "+faststart",
             "-an", *BITEXACT, "-f", "mp4", video_out]
    if audio_out is not None:
        args += ["-map", "0:a:0", "-vn", "-af", audio_filter(plan),
                 "-ac", "1", "-ar", str(AUDIO_RATE), "-c:a", "pcm_s16le", "-flags:a", "+bitexact",
                 *BITEXACT, "-f", "wav", audio_out]
    return args


def cut_clip(source: str | Path, video_out: str | Path, audio_out: str | Path | None, plan: CutPlan,
             settings: CutSettings) -> int:
    """Run the cut; return the number of frames written.

    ffmpeg conceals damaged frames and exits 0, so its error log is read too: any decoder
    error, or fewer (or more) frames than planned, raises :class:`MediaError` with reason
    ``corrupt_source`` and the frames written against the frames expected.
    """
    name = Path(source).name
    args = ffmpeg_cut_args(str(source), str(video_out), None if audio_out is None else str(audio_out),
                           plan, settings)
    done = run_tool(args, f"cut {name}")
    errors = log_lines(done.stderr, args)
    frames = count_video_frames(video_out)
    if errors or frames != plan.frames:
        span = f"{plan.seek_s:.3f}-{plan.seek_s + plan.frames / settings.fps:.3f} s"
        found = f"decoding {name} at {span} hit errors (first: {errors[0]!r}); " if errors else (
            f"{name} ends early or has broken timestamps at {span}: ")
        raise MediaError(f"{found}wrote {frames} of {plan.frames} expected frames", "corrupt_source")
    return frames

