"""Per-frame cost of the face and render stages against their floors, on one pinned CPU (issue 18).

Two real clips are cut by the project's own clip cutter (``cut_clip``: 512x512 at 30 fps,
x264 crf 18 veryfast, as the clip stage writes ``clip.mp4``) into one temporary work area:
``talking_lyl_7s.mp4`` whole (centre crop to fill), and the 1080x1920 HEVC
``raw_seated_1080x1920_hevc.mp4`` cropped around its face. The process is pinned to one
CPU (MediaPipe's and decord's threads and the ffmpeg children share it), the jobs run in
one list whose order is reversed on every other repeat, and each number is a median over
the repeats; ratios are medians of the per-repeat ratios. CPU time is the process's
(``time.process_time``, all threads) plus its finished children's (``os.times``: ffmpeg);
it is disturbed less than wall time by other load on a shared machine. Nothing about time
is asserted.

Face stage (target: at most 1.3x the floor per frame):

* **floor**: decord decode (``iter_frame_chunks``) + a fresh VIDEO-mode FaceLandmarker
  (created before the clock) calling ``detect_for_video`` on every frame, results discarded;
* **stage**: ``ExtractFace.process`` on a ``ClipState`` as the clip stage leaves it: all it
  does (landmarker creation, ``result_arrays``, ``FrameScores``, ``FaceCounter`` with the
  actor's detector already loaded, ``track_jumps``, ``face_arrays``, the ``.npy`` writes);
* **parts**, each on its own, on the same clip's decoded frames and MediaPipe results:
  landmarker creation + close, ``result_arrays`` + ``stack_track``, ``FrameScores``,
  ``FaceCounter``, ``track_jumps``, ``face_arrays``, the ``.npy`` writes; floor + parts
  against the stage gives what is left unexplained.

Render stage (target: at most 3 ms per frame, encode included), on the landmarks the face
stage wrote: ``RenderPose.process``; its parts (``draw_pose_image`` on every frame through
``pose_frames``, the encode alone from pre-drawn frames); and lossless encoder candidates
on the same pre-drawn frames, ``libx264rgb -qp 0`` with the presets ``veryfast`` (the old
setting), ``superfast``, ``ultrafast``, ``ultrafast`` with CABAC, and that with 3
reference frames and 8x8 P partitions (the current ``LOSSLESS_RGB``): ffmpeg CPU and
wall ms per frame, bytes per frame, and whether decoding the file gives back exactly the
drawn frames; and whether the render stage's ``pose.mp4`` is the same file as the
``LOSSLESS_RGB`` candidate's.

    python benchmarks/bench_stages.py [--media DIR] [--repeats R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from aniportrait.crop import PixelBox, resolve_crop
from aniportrait.face import DEFAULT_MODEL, FaceArrays, face_arrays
from aniportrait.format import HAS_FACE, LANDMARKS, POSE_VIDEO, VIDEO, array_bytes
from aniportrait.landmarks import FaceTrack, LandmarkerSettings, iter_frame_chunks, result_arrays, stack_track
from aniportrait.media.cut import CutSettings, cut_clip, plan_cut
from aniportrait.media.encode import LOSSLESS_RGB, encode_rgb_frames
from aniportrait.media.probe import probe
from aniportrait.quality import FrameScores
from aniportrait.schema import ClipInfo, ClipRecord, ClipState
from aniportrait.speakers import track_jumps
from aniportrait.storage import write_local_atomic
from pipelines.build.stages.face import ExtractFace
from pipelines.build.stages.render import RenderPose, pose_frames

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
#: clip id -> (source, crop box in source pixels; None: the whole frame, as the clip stage without a crop)
CLIPS: dict[str, tuple[str, PixelBox | None]] = {
    "lyl": ("talking_lyl_7s.mp4", None),
    "seated_hevc": ("raw_seated_1080x1920_hevc.mp4", PixelBox(220, 380, 720, 720)),  # face ~300 px at x 430, y 590
}
FACE_TARGET = 1.3
RENDER_TARGET_MS = 3.0
MIN_FACE_RATE = 0.9  # BuildConfig's default
SCENE_THRESHOLD = 27.0

DECODE = "decode alone (decord, chunks of 64)"
FLOOR = "FLOOR: decode + detect_for_video"
STAGE = "ExtractFace.process"
CREATE = "  landmarker creation + close"
CONVERT = "  result_arrays + stack_track"
SCORES = "  FrameScores.add + result"
COUNTER = "  FaceCounter.add + result (detector loaded)"
JUMPS = "  track_jumps"
ARRAYS = "  face_arrays"
WRITES = "  .npy writes (array_bytes + write_local_atomic)"
PARTS = (CREATE, CONVERT, SCORES, COUNTER, JUMPS, ARRAYS, WRITES)
RENDER = "RenderPose.process"
DRAW = "  draw_pose_image (pose_frames)"
ENCODE = "  encode alone (LOSSLESS_RGB, pre-drawn frames)"

#: A job: the code between its first and second ``yield`` is timed, before is set-up, after is clean-up.
Job = Callable[[], Iterator[None]]


def x264rgb_options(preset: str, params: str | None = None) -> list[str]:
    """``LOSSLESS_RGB`` with another ``-preset`` and ``-x264-params`` (none when ``params`` is None)."""
    options = list(LOSSLESS_RGB)
    if "-x264-params" in options:
        at = options.index("-x264-params")
        del options[at:at + 2]
    at = options.index("-preset")
    options[at + 1] = preset
    if params is not None:
        options[at + 2:at + 2] = ["-x264-params", params]
    return options


CANDIDATES: dict[str, list[str]] = {
    "veryfast (old setting)": x264rgb_options("veryfast"),
    "superfast": x264rgb_options("superfast"),
    "ultrafast (CAVLC)": x264rgb_options("ultrafast"),
    "ultrafast+cabac=1": x264rgb_options("ultrafast", "cabac=1"),
    "ultrafast+cabac=1+ref=3+p8x8": x264rgb_options("ultrafast", "cabac=1:ref=3:partitions=p8x8"),
}
BASE_CANDIDATE = "veryfast (old setting)"


@dataclass
class Samples:
    """Per-repeat seconds of one job: wall, CPU of this process, CPU of its finished children."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    child: list[float] = field(default_factory=list)

    def total(self) -> list[float]:
        """Process + children CPU seconds per repeat."""
        return [own + kids for own, kids in zip(self.cpu, self.child)]


@dataclass
class Clip:
    """One cut clip in the work area, with what the parts need."""

    clip_id: str
    video: Path
    frames: list[np.ndarray]  # decoded RGB frames
    results: list  # MediaPipe FaceLandmarkerResult per frame (VIDEO mode)
    track: FaceTrack
    fps: float

    @cached_property
    def arrays(self) -> FaceArrays:
        return face_arrays(self.track)

    @property
    def count(self) -> int:
        return len(self.frames)


# ---------------------------------------------------------------------------- helpers

def loadavg() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_timed(job: Job) -> tuple[float, float, float]:
    """(wall s, process CPU s, children CPU s) of the timed section of ``job``."""
    steps = job()
    next(steps)
    kids, cpu, wall = os.times(), time.process_time(), time.perf_counter()
    next(steps, None)
    wall, cpu, after = time.perf_counter() - wall, time.process_time() - cpu, os.times()
    for _ in steps:
        pass
    return wall, cpu, (after.children_user + after.children_system) - (kids.children_user + kids.children_system)


def plain(fn: Callable[[], object]) -> Job:
    """A job without set-up: all of ``fn`` is timed."""
    def job() -> Iterator[None]:
        yield
        fn()
        yield
    return job


def cut(source: Path, box: PixelBox | None, video: Path) -> int:
    """``source`` cut whole as the clip stage does (box, then fill-resize to 512 at 30 fps), without audio."""
    info = probe(source)
    settings = CutSettings()
    box = box or resolve_crop(None, info.width, info.height)
    plan = plan_cut(0.0, info.duration_s, box, settings, source_duration_s=info.duration_s, with_audio=False)
    return cut_clip(source, video, None, plan, settings)


def clip_state(clip_id: str, frames: int, fps: float = 30.0, size: int = 512) -> ClipState:
    """The state the clip stage leaves: ``clip.mp4`` in the work area and the clip's facts."""
    record = ClipRecord(dataset="bench", clip_id=clip_id, source_id=clip_id, source_url=None, mirror_names=(),
                        start_s=0.0, end_s=frames / fps)
    return ClipState(record, outputs={VIDEO.name: VIDEO.work_file},
                     info=ClipInfo(frames=frames, fps=fps, width=size, height=size))


def detect_all(landmarker, video: Path, keep: list | None = None) -> None:
    """Decode ``video`` and call ``detect_for_video`` on every frame, as ``FaceLandmarkerRunner.track``."""
    import mediapipe as mp

    index = 0
    for frames, fps in iter_frame_chunks(video, 64):
        for frame in frames:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = landmarker.detect_for_video(image, round(index * 1000 / fps))
            if keep is not None:
                keep.append(result)
            index += 1


def decode_rgb(video: Path, width: int, height: int) -> np.ndarray:
    """Every frame of ``video`` as (T, H, W, 3) uint8 RGB, decoded by ffmpeg."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


# ---------------------------------------------------------------------------- jobs

def prepare(stage: ExtractFace, clip_id: str, source: Path, box: PixelBox | None) -> Clip:
    """Cut the clip into the stage's work area, run the stage once (warm-up; writes the
    landmarks the render stage reads), and keep the decoded frames and MediaPipe results."""
    video = stage.work.clip_file(clip_id, VIDEO.work_file)
    frames = cut(source, box, video)
    stage.process(clip_state(clip_id, frames))
    decoded = [frame for chunk, _ in iter_frame_chunks(video, 64) for frame in chunk]
    fps = float(next(iter_frame_chunks(video, 1))[1])
    results: list = []
    with stage.runner._create() as landmarker:
        detect_all(landmarker, video, results)
    track = stack_track([result_arrays(r) for r in results], decoded[0].shape[1], decoded[0].shape[0], fps)
    return Clip(clip_id, video, decoded, results, track, fps)


def face_jobs(stage: ExtractFace, clip: Clip, scratch: Path) -> dict[str, Job]:
    """The face stage, its floor and its parts on ``clip``."""
    height, width = clip.frames[0].shape[:2]
    lmks = [row if found else None for row, found in zip(clip.arrays.lmks, clip.arrays.has_face)]

    def floor() -> Iterator[None]:
        landmarker = stage.runner._create()
        yield
        detect_all(landmarker, clip.video)
        yield
        landmarker.close()

    def process() -> Iterator[None]:
        state = clip_state(clip.clip_id, clip.count)
        yield
        stage.process(state)
        yield
        assert state.info.face_frames == int(clip.arrays.has_face.sum()), "stage and floor found other faces"

    def scores() -> None:
        frame_scores = FrameScores(clip.fps, SCENE_THRESHOLD, rgb=True)
        for frame, points in zip(clip.frames, lmks):
            frame_scores.add(frame, points)
        frame_scores.result()

    def counter() -> Iterator[None]:
        stage.faces.reset()
        yield
        for index, frame in enumerate(clip.frames):
            stage.faces.add(index, frame)
        stage.faces.result()
        yield

    def writes() -> None:
        for member, array in clip.arrays.members().items():
            write_local_atomic(scratch / member.work_file, array_bytes(array))

    a = clip.arrays
    return {
        DECODE: plain(lambda: [None for _ in iter_frame_chunks(clip.video, 64)]),
        FLOOR: floor,
        STAGE: process,
        CREATE: plain(lambda: stage.runner._create().close()),
        CONVERT: plain(lambda: stack_track([result_arrays(r) for r in clip.results], width, height, clip.fps)),
        SCORES: plain(scores),
        COUNTER: counter,
        JUMPS: plain(lambda: track_jumps(a.lmks, a.has_face, width, height)),
        ARRAYS: plain(lambda: face_arrays(clip.track)),
        WRITES: plain(writes),
    }


def render_jobs(render: RenderPose, clip: Clip, drawn: list[np.ndarray], scratch: Path) -> dict[str, Job]:
    """The render stage, drawing alone, and each encoder candidate on the pre-drawn frames."""
    height, width = drawn[0].shape[:2]
    lmks = np.load(render.work.clip_file(clip.clip_id, LANDMARKS.work_file))
    has_face = np.load(render.work.clip_file(clip.clip_id, HAS_FACE.work_file))

    def process() -> Iterator[None]:
        state = clip_state(clip.clip_id, clip.count)
        yield
        render.process(state)
        yield

    def draw() -> None:
        for _ in pose_frames(lmks, has_face, width, height):  # each frame dropped, as the stage's pipe does
            pass

    jobs: dict[str, Job] = {RENDER: process, DRAW: plain(draw)}
    for name, options in CANDIDATES.items():
        out = candidate_file(scratch, name)
        jobs[name] = plain(lambda options=options, out=out: encode_rgb_frames(drawn, width, height, clip.fps, out,
                                                                             options))
    return jobs


def candidate_file(scratch: Path, name: str) -> Path:
    return scratch / f"{''.join(c if c.isalnum() else '_' for c in name)}.mp4"


# ---------------------------------------------------------------------------- report

def per_frame(samples: Samples, frames: int, kind: str) -> float:
    """Median ms per frame: ``kind`` is ``wall``, ``cpu`` (process) or ``total`` (process + children)."""
    values = samples.total() if kind == "total" else getattr(samples, kind)
    return 1000 * statistics.median(values) / frames


def paired_ratio(a: Samples, b: Samples, kind: str) -> float:
    """Median over repeats of a / b (``kind`` as in :func:`per_frame`)."""
    pick = (lambda s: s.total()) if kind == "total" else (lambda s: getattr(s, kind))
    return statistics.median(x / y for x, y in zip(pick(a), pick(b)))


def face_report(console: Console, clip: Clip, samples: dict[str, Samples], repeats: int) -> None:
    """The face-stage table of one clip and its verdict against the floor."""
    n = clip.count
    floor = per_frame(samples[FLOOR], n, "cpu")
    table = Table(title=f"face stage, {clip.clip_id}: {n} frames at 512x512, median of {repeats} repeats, one CPU")
    for column in ("job", "ms/frame wall", "ms/frame CPU", "% of floor (CPU)"):
        table.add_column(column, justify="left" if column == "job" else "right")

    def row(name: str, wall: float, cpu: float) -> None:
        table.add_row(name, f"{wall:.3f}", f"{cpu:.3f}", f"{100 * cpu / floor:.1f}")

    for name in (DECODE, FLOOR, STAGE, *PARTS):
        row(name, per_frame(samples[name], n, "wall"), per_frame(samples[name], n, "cpu"))
    explained = {kind: sum(per_frame(samples[name], n, kind) for name in (FLOOR, *PARTS)) for kind in ("wall", "cpu")}
    row("floor + parts", explained["wall"], explained["cpu"])
    row("stage - (floor + parts): unexplained", per_frame(samples[STAGE], n, "wall") - explained["wall"],
        per_frame(samples[STAGE], n, "cpu") - explained["cpu"])
    console.print(table)
    ratio, ratio_wall = (paired_ratio(samples[STAGE], samples[FLOOR], kind) for kind in ("cpu", "wall"))
    with_create = per_frame(samples[STAGE], n, "cpu") / (floor + per_frame(samples[CREATE], n, "cpu"))
    share = statistics.median(c / w for c, w in zip(samples[FLOOR].cpu, samples[FLOOR].wall))
    console.print(f"{clip.clip_id}: stage / floor = {ratio:.3f}x CPU, {ratio_wall:.3f}x wall (paired medians) -> "
                  f"target <= {FACE_TARGET}x {'MET' if ratio <= FACE_TARGET else 'NOT MET'} on CPU time in this run "
                  f"({'met' if ratio_wall <= FACE_TARGET else 'not met'} on wall time; the floor got {share:.0%} of its "
                  f"core); against floor + landmarker creation {with_create:.3f}x CPU")


def render_report(console: Console, clip: Clip, samples: dict[str, Samples], current: str) -> None:
    """The render-stage table of one clip and its verdict against the 3 ms target."""
    n = clip.count
    table = Table(title=f"render stage, {clip.clip_id}: {n} frames (CPU = process + ffmpeg)")
    for column in ("job", "ms/frame wall", "ms/frame CPU", f"x {RENDER_TARGET_MS:g} ms target (CPU)"):
        table.add_column(column, justify="left" if column == "job" else "right")
    rows = {RENDER: samples[RENDER], DRAW: samples[DRAW], ENCODE: samples[current]}
    for name, sample in rows.items():
        cpu = per_frame(sample, n, "total")
        table.add_row(name, f"{per_frame(sample, n, 'wall'):.3f}", f"{cpu:.3f}", f"{cpu / RENDER_TARGET_MS:.2f}")
    parts = [sum(per_frame(rows[name], n, kind) for name in (DRAW, ENCODE)) for kind in ("wall", "total")]
    table.add_row("draw + encode", f"{parts[0]:.3f}", f"{parts[1]:.3f}", f"{parts[1] / RENDER_TARGET_MS:.2f}")
    console.print(table)
    wall, cpu = per_frame(samples[RENDER], n, "wall"), per_frame(samples[RENDER], n, "total")
    console.print(f"{clip.clip_id}: render {cpu:.2f} ms/frame CPU -> target <= {RENDER_TARGET_MS:g} ms "
                  f"{'MET' if cpu <= RENDER_TARGET_MS else 'NOT MET'} on CPU time in this run; {wall:.2f} ms/frame wall "
                  f"({'met' if wall <= RENDER_TARGET_MS else 'not met'}: wall time also holds waiting for the core)")


def candidates_report(console: Console, clip: Clip, samples: dict[str, Samples], sizes: dict[str, int],
                      lossless: dict[str, bool], current: str) -> None:
    """The encoder candidates of one clip: speed, size, losslessness."""
    n = clip.count
    base = samples[BASE_CANDIDATE]
    table = Table(title=f"lossless encoders on {clip.clip_id}'s {n} pre-drawn pose frames (libx264rgb -qp 0)")
    for column in ("candidate", "ffmpeg CPU ms/frame", "CPU incl. pipe ms/frame", "wall ms/frame",
                   "x faster than veryfast (ffmpeg CPU)", "bytes/frame", "bytes x veryfast", "lossless"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for name in CANDIDATES:
        s = samples[name]
        table.add_row(name + (" *" if name == current else ""), f"{per_frame(s, n, 'child'):.3f}",
                      f"{per_frame(s, n, 'total'):.3f}", f"{per_frame(s, n, 'wall'):.3f}",
                      f"{paired_ratio(base, s, 'child'):.2f}x", f"{sizes[name] / n:,.0f}",
                      f"{sizes[name] / sizes[BASE_CANDIDATE]:.3f}", "yes" if lossless[name] else "NO")
    console.print(table)
    console.print("* = LOSSLESS_RGB, the render stage's setting; speed-ups are paired medians over the repeats")


def encoder_checks(clip: Clip, drawn: np.ndarray, scratch: Path, work_pose: Path, current: str
                   ) -> tuple[dict[str, int], dict[str, bool], bool]:
    """Bytes of each candidate's file, whether it decodes to exactly the drawn frames, and whether
    the render stage's ``pose.mp4`` is the current candidate's file byte for byte."""
    height, width = drawn.shape[1:3]
    sizes, lossless = {}, {}
    for name in CANDIDATES:
        path = candidate_file(scratch, name)
        sizes[name] = path.stat().st_size
        lossless[name] = bool(np.array_equal(decode_rgb(path, width, height), drawn))
    same = work_pose.read_bytes() == candidate_file(scratch, current).read_bytes()
    return sizes, lossless, same


# ---------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="folder holding the real clips")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (default 3)")
    args = parser.parse_args()
    for source, _ in CLIPS.values():
        if not (args.media / source).is_file():
            raise SystemExit(f"{args.media / source} not found (pass --media)")
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    console = Console() if Console().is_terminal else Console(width=180)
    load_start = loadavg()
    console.print(f"pinned to CPU {cpu} of {os.cpu_count()}; load average at the start {load_start}")
    current = next((name for name, options in CANDIDATES.items() if options == LOSSLESS_RGB), None)
    if current is None:  # LOSSLESS_RGB is none of the candidates: time it too
        current = "LOSSLESS_RGB (current)"
        CANDIDATES[current] = list(LOSSLESS_RGB)
    console.print(f"LOSSLESS_RGB = {' '.join(LOSSLESS_RGB)}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        face = ExtractFace(str(work), LandmarkerSettings(str(DEFAULT_MODEL), mode="video"), MIN_FACE_RATE,
                           SCENE_THRESHOLD)
        render = RenderPose(str(work), upstream_hash=face.stage_hash)
        clips: dict[str, Clip] = {}
        drawn: dict[str, list[np.ndarray]] = {}
        jobs: dict[tuple[str, str], Job] = {}
        for clip_id, (source, box) in CLIPS.items():
            clip = clips[clip_id] = prepare(face, clip_id, args.media / source, box)
            a = clip.arrays
            drawn[clip_id] = list(pose_frames(a.lmks, a.has_face, 512, 512))
            scratch = Path(tmp) / clip_id
            scratch.mkdir()
            jobs |= {(clip_id, name): job for name, job in face_jobs(face, clip, scratch).items()}
            jobs |= {(clip_id, name): job for name, job in render_jobs(render, clip, drawn[clip_id], scratch).items()}
            console.print(f"{clip_id} ({source}): {clip.count} frames, face in {int(a.has_face.sum())}")
        for job in jobs.values():  # warm-up
            run_timed(job)
        samples = {key: Samples() for key in jobs}
        for repeat in range(args.repeats):
            for key in list(jobs) if repeat % 2 == 0 else list(jobs)[::-1]:
                for values, value in zip((samples[key].wall, samples[key].cpu, samples[key].child),
                                         run_timed(jobs[key])):
                    values.append(value)
        checks = {clip_id: encoder_checks(clip, np.stack(drawn[clip_id]), Path(tmp) / clip_id,
                                          render.work.clip_file(clip_id, POSE_VIDEO.work_file), current)
                  for clip_id, clip in clips.items()}
        face.faces.close()  # the actor's detector (closed here, not at interpreter exit)

    for clip_id, clip in clips.items():
        of_clip = {name: s for (cid, name), s in samples.items() if cid == clip_id}
        face_report(console, clip, of_clip, args.repeats)
        render_report(console, clip, of_clip, current)
        sizes, lossless, same = checks[clip_id]
        candidates_report(console, clip, of_clip, sizes, lossless, current)
        console.print(f"{clip_id}: RenderPose's pose.mp4 {'is' if same else 'is NOT'} byte-identical to the "
                      f"{current} file")
    console.print(f"load average at the end {loadavg()} (start {load_start})")


if __name__ == "__main__":
    main()
