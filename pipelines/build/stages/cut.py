"""Clip stage: cut, crop, resize and resample one clip (video mp4 + 16 kHz mono wav)."""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from functools import lru_cache

from aniportrait.crop import resolve_crop
from aniportrait.format import AUDIO, VIDEO
from aniportrait.media.cut import CutSettings, cut_clip, plan_cut
from aniportrait.media.probe import MediaError, MediaInfo, probe
from aniportrait.schema import ClipState
from aniportrait.storage import local_atomic_path
from pipelines.build.stages.base import ClipStage


@lru_cache(maxsize=32)
def _probe_cached(path: str, mtime_ns: int) -> MediaInfo:
    return probe(path)


class CutClip(ClipStage):
    """Cut one clip out of its source video with the dataset's crop rule.

    The span is checked against the source first (``span_out_of_range``), decoding errors
    fail the clip (``corrupt_source``), and a clip of fewer than ``min_frames`` frames is
    filtered out (``too_short``) with its files kept.
    """

    name = "clip"

    def __init__(self, work_dir: str, cut: CutSettings, min_frames: int = 1, upstream_hash: str = "") -> None:
        if min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {min_frames}")
        super().__init__(work_dir, {**dataclasses.asdict(cut), "min_frames": min_frames}, upstream_hash)
        self.cut = cut
        self.min_frames = min_frames

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "cut": self.cut, "min_frames": self.min_frames,
                "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        record = state.record
        if not state.source_path:
            raise MediaError(f"no source video for {record.source_id}", "unreadable_source")
        info = _probe_cached(state.source_path, os.stat(state.source_path).st_mtime_ns)
        box = resolve_crop(record.crop, info.width, info.height)
        start_s, end_s = record.time_span()
        seek_back = 0.5 / record.source_fps if record.source_fps else 0.0
        with_audio = info.has_audio and record.expect_audio
        plan = plan_cut(start_s, end_s, box, self.cut, source_duration_s=info.duration_s,
                        with_audio=with_audio, seek_back_s=seek_back)
        video = self.work.clip_file(record.clip_id, VIDEO.work_file)
        audio = self.work.clip_file(record.clip_id, AUDIO.work_file)
        audio_target = local_atomic_path(audio) if with_audio else nullcontext(None)
        with local_atomic_path(video) as tmp_video, audio_target as tmp_audio:
            frames = cut_clip(state.source_path, tmp_video, tmp_audio, plan, self.cut)
        state.outputs = {VIDEO.name: VIDEO.work_file, **({AUDIO.name: AUDIO.work_file} if with_audio else {})}
        state.info.update(
            frames=frames,
            fps=self.cut.fps,
            width=self.cut.size,
            height=self.cut.size,
            duration_s=round(frames / self.cut.fps, 6),
            has_audio=with_audio,
            audio_samples=plan.audio_samples if with_audio else 0,
            audio_note=_audio_note(record.expect_audio, info, end_s),
            span_s=[round(start_s, 6), round(min(end_s, info.duration_s or end_s), 6)],
            crop_box=box.as_list(),
            source_width=info.width,
            source_height=info.height,
            source_fps=round(info.fps, 6),
            source_codec=info.video_codec,
        )
        if frames < self.min_frames:
            state.reject(self.name, "too_short", "too_short")


def _audio_note(expected: bool, info: MediaInfo, end_s: float) -> str | None:
    """Why a clip has no or padded audio (``None`` when the audio is complete)."""
    if not expected:
        return "dataset is video-only"
    if not info.has_audio:
        return "source has no audio stream"
    if info.audio_duration_s is not None and info.audio_duration_s + 0.05 < min(end_s, info.duration_s):
        return f"source audio ends at {info.audio_duration_s:.2f} s; padded with silence"
    return None
