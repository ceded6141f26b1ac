"""Cost of the verdict checks (issue 15) next to the stages they run in, measured in one run.

Per clip, the cut's new checks (span against the probed source length, decoder errors read
from the log ffmpeg already writes) against the cut itself: ``cut_clip`` on the clips
below, and the log scan on the error log of a clip with corrupt packets.

Per frame, the one-speaker checks next to the face stage's:

On two real clips cut to 512x512 at 30 fps with ffmpeg (``talking_lyl_7s.mp4`` whole, and
the 1080x1920 HEVC ``raw_seated_1080x1920_hevc.mp4`` cropped around its face) it times,
alternating the order on each repeat, with the process pinned to one CPU (MediaPipe's
and decord's threads share it):

* the face stage's floor: ``FaceLandmarkerRunner.track`` (decord decode + VIDEO-mode
  FaceLandmarker);
* the same with a ``FaceCounter`` fed from its ``on_frame`` hook (one per clip, detector
  creation included) and ``track_jumps`` on the track afterwards;
* for reference, the parts: the counter on already decoded frames, creating the detector,
  ``track_jumps``.

It prints ms per frame (wall and CPU) and the checks' extra cost as a share of the face
stage (target: under 5%): as the sum of the parts, and as the median of the per-repeat
differences of the two face-stage runs (timed back to back). On a shared machine that
difference is within the face stage's own spread between repeats (printed with it), so
the verdict uses the parts. It asserts nothing about time.

    python benchmarks/bench_checks.py [--media DIR] [--repeats R]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2  # noqa: F401  (before decord, imported by aniportrait.landmarks)
import numpy as np
from rich.console import Console
from rich.table import Table

from aniportrait.crop import resolve_crop
from aniportrait.face import DEFAULT_MODEL
from aniportrait.media.cut import CutSettings, cut_clip, plan_cut
from aniportrait.media.probe import log_lines, probe
from aniportrait.landmarks import FaceLandmarkerRunner, FaceTrack, LandmarkerSettings, iter_frame_chunks
from aniportrait.speakers import FaceCounter, track_jumps

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
CLIPS = {  # source -> ffmpeg crop/scale to 512x512 (the seated face is ~300 px at x 430, y 590)
    "talking_lyl_7s.mp4": "scale=512:512",
    "raw_seated_1080x1920_hevc.mp4": "crop=720:720:220:380,scale=512:512",
}
TARGET_RATIO = 0.05
FACE = "face stage (decode + VIDEO track)"
CHECKED = "face stage + FaceCounter hook + track_jumps"
COUNTER = "  FaceCounter on decoded frames (creation included)"
CREATE = "  detector creation + 1 detection"
JUMPS = "  track_jumps"
MODEL = str(DEFAULT_MODEL)


def cut_square(source: Path, crop: str, out: Path) -> Path:
    """``source`` through ``crop`` at 30 fps, H.264, no audio."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
                    "-vf", f"{crop},fps=30,setsar=1", "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def checked(runner: FaceLandmarkerRunner, video: Path) -> tuple[dict, int]:
    """The face stage with the speaker checks, as the face stage would run them."""
    frames = itertools.count()
    with FaceCounter(MODEL) as counter:
        track = runner.track(video, on_frame=lambda frame, _lmks: counter.add(next(frames), frame))
        return counter.result(), track_jumps(track.lmks, track.has_face, track.width, track.height)


def count_decoded(frames: list[np.ndarray]) -> dict:
    with FaceCounter(MODEL) as counter:
        for index, frame in enumerate(frames):
            counter.add(index, frame)
        return counter.result()


def create_detector(frame: np.ndarray) -> None:
    """Detector creation (bundle read + model load) and its first, single detection."""
    with FaceCounter(MODEL) as counter:
        counter.add(0, frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="folder holding the real clips")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (default 5)")
    args = parser.parse_args()
    for name in CLIPS:
        if not (args.media / name).is_file():
            raise SystemExit(f"{args.media / name} not found (pass --media)")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(f"pinned to CPU {cpu}; 1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    runner = FaceLandmarkerRunner(LandmarkerSettings(MODEL, mode="video"))
    jobs: dict[str, Callable[[], object]] = {}
    frames_of: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, crop in CLIPS.items():
            video = cut_square(args.media / name, crop, Path(tmp) / name)
            track: FaceTrack = runner.track(video)  # warm-up: model bytes, imports
            decoded = [frame for chunk, _ in iter_frame_chunks(video, 64) for frame in chunk]
            frames_of[name] = len(decoded)
            jobs |= {
                f"{name}: {FACE}": lambda video=video: runner.track(video),
                f"{name}: {CHECKED}": lambda video=video: checked(runner, video),
                f"{name}: {COUNTER}": lambda decoded=decoded: count_decoded(decoded),
                f"{name}: {CREATE}": lambda frame=decoded[0]: create_detector(frame),
                f"{name}: {JUMPS}": lambda t=track: track_jumps(t.lmks, t.has_face, t.width, t.height),
            }
            console.print(f"{name}: {len(decoded)} frames, speakers {checked(runner, video)} "
                          f"(faces_max, second_face_rate, sampled; track jumps)")
        for fn in jobs.values():  # warm-up
            fn()
        walls: dict[str, list[float]] = {job: [] for job in jobs}
        cpus: dict[str, list[float]] = {job: [] for job in jobs}
        for repeat in range(args.repeats):
            for job in list(jobs) if repeat % 2 == 0 else list(jobs)[::-1]:  # face and checked stay adjacent
                wall, cpu_s = timed(jobs[job])
                walls[job].append(wall)
                cpus[job].append(cpu_s)

    def paired_extra(samples: dict[str, list[float]], name: str, frames: int) -> float:
        """Median over repeats of (checked - face) ms/frame, each pair timed back to back."""
        pairs = zip(samples[f"{name}: {CHECKED}"], samples[f"{name}: {FACE}"])
        return 1000 * statistics.median(checked_s - face_s for checked_s, face_s in pairs) / frames

    def per_frame(samples: dict[str, list[float]], job: str) -> float:
        return 1000 * statistics.median(samples[job]) / frames_of[job.split(":")[0]]

    table = Table(title=f"512x512 clips at 30 fps, median of {args.repeats} repeats, one CPU")
    for column in ("job", "ms/frame wall", "ms/frame CPU", "% of face (CPU)"):
        table.add_column(column, justify="left" if column == "job" else "right")
    for job in jobs:
        face = per_frame(cpus, f"{job.split(':')[0]}: {FACE}")
        table.add_row(job, f"{per_frame(walls, job):.3f}", f"{per_frame(cpus, job):.3f}",
                      f"{100 * per_frame(cpus, job) / face:.1f}")
    console.print(table)
    for name in CLIPS:
        face, face_wall = per_frame(cpus, f"{name}: {FACE}"), per_frame(walls, f"{name}: {FACE}")
        parts = sum(per_frame(cpus, f"{name}: {part}") for part in (COUNTER, JUMPS))
        extra, extra_wall = (paired_extra(samples, name, frames_of[name]) for samples in (cpus, walls))
        face_s = cpus[f"{name}: {FACE}"]
        spread = (max(face_s) - min(face_s)) / statistics.median(face_s)
        console.print(f"{name}: speaker checks: +{parts:.3f} ms/frame = {parts / face:.1%} of the face stage "
                      f"(sum of the parts, CPU) -> target < {TARGET_RATIO:.0%} "
                      f"{'MET' if parts / face < TARGET_RATIO else 'NOT MET'} on this run; hooked run - face run "
                      f"(paired median): {extra:+.3f} ms/frame = {extra / face:+.1%} CPU, "
                      f"{extra_wall / face_wall:+.1%} wall, while the face stage alone varied by {spread:.1%} (CPU) "
                      "between repeats")
    cut_checks(args.media, args.repeats, console)
    console.print(f"1-minute load average at the end {os.getloadavg()[0]:.1f}")


def cut_checks(media: Path, repeats: int, console: Console) -> None:
    """Per clip: a 3 s cut at 512 px against the span check and the decode-error scan of its log."""
    source = media / "talking_lyl_7s.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        info = probe(source)
        box = resolve_crop(None, info.width, info.height)
        settings = CutSettings()

        def plan():
            return plan_cut(1.0, 4.0, box, settings, source_duration_s=info.duration_s, with_audio=True)

        def cut():
            return cut_clip(source, Path(tmp) / "v.mp4", Path(tmp) / "a.wav", plan(), settings)

        corrupt = subprocess.run(["ffmpeg", "-v", "error", "-i", str(corrupted_copy(source, Path(tmp))),
                                  "-f", "null", "-"], capture_output=True).stderr
        cut_s = statistics.median(timed(cut)[0] for _ in range(repeats))
        plan_s = statistics.median(timed(plan)[0] for _ in range(repeats))
        scan_s = statistics.median(timed(lambda: log_lines(corrupt, [str(source)]))[0] for _ in range(repeats))
    console.print(f"per clip: cut of 3 s at 512 px {1000 * cut_s:.1f} ms wall; span check {1e6 * plan_s:.0f} us "
                  f"({plan_s / cut_s:.4%}); decode-error scan of a corrupt clip's log "
                  f"({len(corrupt.splitlines())} lines) {1e6 * scan_s:.0f} us ({scan_s / cut_s:.4%})")


def corrupted_copy(source: Path, folder: Path) -> Path:
    """A 3 s H.264 copy of ``source`` with garbage over a stretch of its middle bytes."""
    clean = folder / "clean.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-t", "3", "-i", str(source), "-an", "-c:v",
                    "libx264", "-preset", "ultrafast", "-g", "10", "-movflags", "+faststart", str(clean)], check=True)
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle: middle + len(data) // 6] = np.random.default_rng(0).integers(0, 256, len(data) // 6,
                                                                              dtype=np.uint8).tobytes()
    damaged = folder / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    return damaged


if __name__ == "__main__":
    main()
