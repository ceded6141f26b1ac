"""Quality-stage cost per frame next to the face stage's, measured in the same run.

On one real clip (``talking_lyl_7s.mp4`` cut by the project's own clip cutter to 512x512
at 30 fps with a 16 kHz wav, as the clip stage writes it) it times, alternating the order
on each repeat, with the process pinned to one CPU:

* the face stage's work without curation: ``FaceLandmarkerRunner.track`` (VIDEO mode,
  decode included) and ``face_arrays``;
* the same with the ``FrameScores`` hook the build uses (scene cuts and image metrics
  gathered from the face stage's own decoded frames);
* the quality stage proper: ``clip_quality`` given those frame scores (face size, pose
  ranges, jitter, sync) — what ``ScoreQuality`` runs;
* for reference, ``clip_quality`` decoding the video itself, a decode-only pass and the
  parts (scene cuts, image metrics, sync).

The quality cost in the build is (face with hook - face) + quality stage; it prints that
as a ratio of the face stage (target: under 10%), in ms per frame (wall and CPU; CPU is
disturbed less by other load). It asserts nothing about time.

    python benchmarks/bench_quality.py [--media DIR] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2  # noqa: F401  (before decord, imported by aniportrait.landmarks)
from rich.console import Console
from rich.table import Table

from aniportrait import quality
from aniportrait.audio import load_audio
from aniportrait.crop import PixelBox
from aniportrait.face import DEFAULT_MODEL, face_arrays
from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings
from aniportrait.media.cut import CutSettings, cut_clip, plan_cut
from aniportrait.media.probe import probe

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
CLIP_NAME = "talking_lyl_7s.mp4"
TARGET_RATIO = 0.10
FACE = "face stage (track + face_arrays)"
HOOKED = "face stage + FrameScores hook"
STAGE = "quality stage (clip_quality given frame scores)"
QUALITY = "clip_quality (own decode, reference)"
RATE = 16_000


def cut_square(source: Path, folder: Path) -> tuple[Path, Path, float]:
    """``source`` centre-cropped to 512x512 at 30 fps (mp4 + 16 kHz wav), as the clip stage cuts it."""
    info = probe(source)
    side = min(info.width, info.height)
    box = PixelBox((info.width - side) // 2, (info.height - side) // 2, side, side)
    settings = CutSettings()
    plan = plan_cut(0.0, info.duration_s, box, settings, source_duration_s=info.duration_s, with_audio=True)
    video, wav = folder / "clip.mp4", folder / "audio.wav"
    cut_clip(source, video, wav, plan, settings)
    return video, wav, settings.fps


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def decode_only(video: Path) -> int:
    reader = quality._VideoReader(video)
    return sum(1 for _ in reader.frames())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="folder holding talking_lyl_7s.mp4")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    args = parser.parse_args()
    source = args.media / CLIP_NAME
    if not source.is_file():
        raise SystemExit(f"{source} not found (pass --media)")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(f"pinned to CPU {cpu}; 1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        video, wav, fps = cut_square(source, Path(tmp))
        runner = FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL), mode="video"))
        face = face_arrays(runner.track(video))  # warm-up: model bytes, imports
        audio = load_audio(wav)
        frames = len(face.has_face)
        lmks, has_face = face.lmks, face.has_face
        boxes = quality.face_boxes(lmks, has_face, 512, 512)

        def sync() -> quality.SyncEstimate:
            mouth = quality.mouth_opening(lmks, has_face, 512, 512)
            return quality.estimate_sync(mouth, quality.speech_envelope(audio, RATE, fps, frames), fps=fps)

        def face_metrics() -> object:
            return (quality.face_heights_px(lmks, has_face, 512), quality.pose_ranges(face.pose6d, has_face),
                    quality.landmark_jitter(face.lmks3d, has_face), quality.face_boxes(lmks, has_face, 512, 512))

        decoded = list(quality._VideoReader(video).frames())  # BGR, as clip_quality's own decode gives them

        def hooked() -> dict[str, object]:
            scores = quality.FrameScores(fps, rgb=True)
            face_arrays(runner.track(video, on_frame=scores.add))
            return scores.result()

        frame_scores = hooked()

        def scene_cuts() -> list[int]:
            finder = quality.SceneCutFinder(fps)
            for frame in decoded:
                finder.add(frame)
            return finder.result()

        def image_stats() -> tuple[float, float]:
            stats = quality.FaceImageStats()
            for frame, box in zip(decoded, boxes):
                stats.add(frame, box)
            return stats.result()

        def stage() -> quality.QualityScores:
            return quality.clip_quality(video, lmks, face.lmks3d, face.pose6d, has_face, audio, RATE, fps,
                                        frame_scores=frame_scores)

        jobs: dict[str, Callable[[], object]] = {
            FACE: lambda: face_arrays(runner.track(video)),
            HOOKED: hooked,
            STAGE: stage,
            QUALITY: lambda: quality.clip_quality(video, lmks, face.lmks3d, face.pose6d, has_face, audio, RATE, fps),
            "  decode (cv2, 1 thread)": lambda: decode_only(video),
            "  scene cuts (decoded frames)": scene_cuts,
            f"  image metrics (decoded frames, every {quality.IMAGE_STEP}th)": image_stats,
            "  sync estimate": sync,
            "  face metrics": face_metrics,
            "load_audio (wav; ffmpeg child CPU not counted)": lambda: load_audio(wav),
        }
        for fn in jobs.values():  # warm-up (scenedetect import, caches)
            fn()
        walls: dict[str, list[float]] = {name: [] for name in jobs}
        cpus: dict[str, list[float]] = {name: [] for name in jobs}
        for repeat in range(args.repeats):
            order = list(jobs) if repeat % 2 == 0 else list(jobs)[::-1]
            for name in order:
                wall, cpu_s, _ = timed(jobs[name])
                walls[name].append(wall)
                cpus[name].append(cpu_s)
        scores = stage()

    ms = {name: 1000 * statistics.median(v) / frames for name, v in walls.items()}
    ms_cpu = {name: 1000 * statistics.median(v) / frames for name, v in cpus.items()}
    table = Table(title=f"{CLIP_NAME} cut to 512x512 at 30 fps: {frames} frames, median of {args.repeats} repeats")
    for column in ("job", "ms/frame wall", "ms/frame CPU", "% of face (CPU)"):
        table.add_column(column, justify="left" if column == "job" else "right")
    for name in jobs:
        table.add_row(name, f"{ms[name]:.3f}", f"{ms_cpu[name]:.3f}", f"{100 * ms_cpu[name] / ms_cpu[FACE]:.1f}")
    console.print(table)
    in_build = ms_cpu[HOOKED] - ms_cpu[FACE] + ms_cpu[STAGE]
    in_build_wall = ms[HOOKED] - ms[FACE] + ms[STAGE]
    ratio, ratio_wall = in_build / ms_cpu[FACE], in_build_wall / ms[FACE]
    console.print(f"quality cost in the build (hook + stage) / face stage: {ratio:.1%} of CPU time, "
                  f"{ratio_wall:.1%} of wall time -> target < {TARGET_RATIO:.0%} "
                  f"{'MET' if ratio < TARGET_RATIO else 'NOT MET'} on this run")
    console.print(f"for reference, clip_quality with its own decode: {ms_cpu[QUALITY] / ms_cpu[FACE]:.1%} of CPU time")
    console.print(f"scores: {scores.to_dict()}")
    console.print(f"1-minute load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
