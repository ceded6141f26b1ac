"""Landmark-stage throughput against the official-style baseline, and IMAGE vs VIDEO mode.

Measured on the same real videos in the same run, so that ratios can be compared:

* baseline (the official preprocessing): ``ffmpeg`` writes every frame to a PNG file,
  then each frame goes through ``cv2.imread``, BGR -> RGB and a MediaPipe IMAGE-mode
  ``FaceLandmarker.detect``; one landmarker for the whole run, created before the clock
  starts. The ffmpeg step is timed with the rest.
* ours, one process: ``FaceLandmarkerRunner.track`` (decord decode in chunks, one fresh
  landmarker per clip) in VIDEO (tracking) and IMAGE mode.
* ours on Ray Data: an actor pool of 1 and of 2 workers (``num_cpus=1`` each, one task
  in flight per actor), each actor holding a ``FaceLandmarkerRunner``, over the videos
  listed ``--copies`` times, longest first, one block per video; after a warm-up, the
  whole ``materialize()`` is timed, and also the processing span inside the actors
  (actor start-up left out), with the actors' CPU time and the machine's (/proc/stat).

The one-process methods run in a child process pinned to one CPU (ffmpeg included, it
inherits the pinning), so their frames/s are per core; they alternate order on each
repeat. It also prints the frames per CPU-second (process + ffmpeg CPU time), which
other load on the machine disturbs less than wall time. Last, it compares the landmarks
of the two modes (difference, faces found, frame-to-frame jitter), checks that ours in
IMAGE mode gives the baseline's landmarks, and says whether the targets (>= 2x the
baseline per core, >= 1.8x from 1 to 2 Ray workers) were met. It asserts nothing about time.

    python benchmarks/bench_face.py [--media DIR] [--repeats R] [--copies C] [--mode video|image] [--verbose]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2  # before decord (imported by aniportrait.landmarks): decord first breaks cv2's PNG codec
import numpy as np
from rich.console import Console
from rich.table import Table

from aniportrait.face import DEFAULT_MODEL
from aniportrait.landmarks import FaceLandmarkerRunner, FaceTrack, LandmarkerSettings, result_arrays, stack_track

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
FALLBACK_MEDIA = REPO / "datasets_spec" / "data" / "sample" / "mirror"
#: The three real talking/moving-head clips (125 + 233 + 62 frames at about 512x512).
MEDIA_NAMES = ("head_pose_ref.mp4", "talking_lyl_7s.mp4", "talking_hdtf_radio10_0.mp4")
SINGLE_METHODS = ("baseline", "video", "image")
LABELS = {"baseline": "baseline (PNG, IMAGE)", "video": "ours VIDEO", "image": "ours IMAGE"}
WORKER_COUNTS = (1, 2)
TARGET_PER_CORE = 2.0
TARGET_SPEEDUP = 1.8


@dataclass
class Timing:
    """One timed pass of a method over all videos."""

    frames: int
    wall_s: float
    cpu_s: float = float("nan")

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def fps_cpu(self) -> float:
        return self.frames / self.cpu_s


@dataclass
class SingleResult:
    """What the pinned child process measured: timings per method and the landmarks of each."""

    cpu: int
    timings: dict[str, list[Timing]] = field(default_factory=dict)
    tracks: dict[str, list[FaceTrack]] = field(default_factory=dict)


# ---------------------------------------------------------------- one process, one core

def _init_child(cpu: int, quiet: bool) -> None:
    """Pool initializer: pin the child (and the threads and processes it starts) to ``cpu``.

    ``quiet`` sends the child's stderr (MediaPipe's C++ start-up chatter, once per
    landmarker) to /dev/null; errors still reach the parent as exceptions.
    """
    os.sched_setaffinity(0, {cpu})
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)


def _image_landmarker(model_path: str):
    """An IMAGE-mode FaceLandmarker configured as the official ``LMKExtractor``."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path),
        running_mode=vision.RunningMode.IMAGE, num_faces=1,
        output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    return vision.FaceLandmarker.create_from_options(options)


def _cpu_now() -> float:
    """CPU seconds of this process plus its waited-for children (ffmpeg)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def baseline_track(video: Path, landmarker, tmp: Path) -> FaceTrack:
    """The official-style path for one video: every frame to PNG, then one ``detect`` per file."""
    import mediapipe as mp

    frames_dir = Path(tempfile.mkdtemp(prefix="frames-", dir=tmp))
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), str(frames_dir / "%05d.png")],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ffmpeg failed on {video}: {done.stderr.strip()}")
    rows = []
    height = width = 0
    for png in sorted(frames_dir.glob("*.png")):
        bgr = cv2.imread(str(png))
        if bgr is None:
            raise RuntimeError(f"cv2.imread could not read {png} (decord imported before cv2?)")
        height, width = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rows.append(result_arrays(landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))))
    return stack_track(rows, width, height, 0.0)


def single_process_runs(videos: list[str], model_path: str, repeats: int) -> SingleResult:
    """Time the three one-process methods (child process, pinned); keep the last pass's tracks."""
    runners = {mode: FaceLandmarkerRunner(LandmarkerSettings(model_path, mode=mode)) for mode in ("video", "image")}
    landmarker = _image_landmarker(model_path)
    result = SingleResult(cpu=next(iter(os.sched_getaffinity(0))))
    with tempfile.TemporaryDirectory(prefix="bench-face-") as tmp_name:
        tmp = Path(tmp_name)

        def one_pass(method: str, clips: list[str]) -> tuple[Timing, list[FaceTrack]]:
            started, cpu_started = time.perf_counter(), _cpu_now()
            if method == "baseline":
                tracks = [baseline_track(Path(v), landmarker, tmp) for v in clips]
            else:
                tracks = [runners[method].track(v) for v in clips]
            timing = Timing(sum(len(t.has_face) for t in tracks), time.perf_counter() - started,
                            _cpu_now() - cpu_started)
            for child in tmp.iterdir():  # PNG clean-up is not timed
                for png in child.iterdir():
                    png.unlink()
                child.rmdir()
            return timing, tracks

        shortest = min(videos, key=lambda v: Path(v).stat().st_size)
        for method in SINGLE_METHODS:  # warm-up: model bytes, imports, page cache, ffmpeg binary
            one_pass(method, [shortest])
        for repeat in range(repeats):
            order = SINGLE_METHODS if repeat % 2 == 0 else SINGLE_METHODS[::-1]
            for method in order:
                timing, tracks = one_pass(method, videos)
                result.timings.setdefault(method, []).append(timing)
                result.tracks[method] = tracks
    landmarker.close()
    return result


# ---------------------------------------------------------------- Ray actor pools

class TrackVideo:
    """Ray Data callable: track one video, return its frame count and timestamps (not the arrays)."""

    def __init__(self, model_path: str, mode: str) -> None:
        self.runner = FaceLandmarkerRunner(LandmarkerSettings(model_path, mode=mode))

    def __call__(self, row: dict) -> dict:
        started, cpu_started = time.time(), time.process_time()
        track = self.runner.track(row["video"])
        return {"video": row["video"], "frames": len(track.has_face), "faces": int(track.has_face.sum()),
                "start": started, "end": time.time(), "cpu_s": time.process_time() - cpu_started,
                "pid": os.getpid(), "cores": len(os.sched_getaffinity(0))}


def machine_cpu_s() -> float:
    """CPU seconds all cores have been busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Samples :func:`machine_cpu_s` every ``period`` s in a thread; :meth:`busy` integrates a window."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), machine_cpu_s()))
            if self._stop.wait(self.period):
                self.samples.append((time.time(), machine_cpu_s()))
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy(self, start: float, end: float) -> float:
        """Busy CPU seconds of the whole machine between two ``time.time()`` stamps (interpolated)."""
        times, values = zip(*self.samples)
        return float(np.interp(end, times, values) - np.interp(start, times, values))


@dataclass
class RayRun:
    """One timed ``materialize`` of the actor-pool pipeline."""

    workers: int
    frames: int
    wall_s: float   # the whole execution, actor start-up included
    span_s: float   # first video started -> last video finished, inside the actors
    actors: int
    busy_s: float   # sum over videos of their wall time inside an actor
    cpu_s: float    # sum over videos of the actor's CPU time
    cores: int      # fewest cores an actor was allowed to run on
    machine_s: float  # busy CPU seconds of the whole machine during the span
    driver_s: float   # CPU seconds of this (driver) process during the materialize

    @property
    def actor_cores(self) -> float:
        """Cores the actors' tracking kept busy on average over the span."""
        return self.cpu_s / self.span_s

    @property
    def fps_cpu(self) -> float:
        """Frames per CPU-second of the actors' tracking."""
        return self.frames / self.cpu_s

    @property
    def others_cores(self) -> float:
        """Cores busy with anything but the actors' tracking during the span (Ray, the driver, other users)."""
        return (self.machine_s - self.cpu_s) / self.span_s

    @property
    def cpu_share(self) -> float:
        """CPU seconds per busy second of an actor (below 1: it waited for a core)."""
        return self.cpu_s / self.busy_s

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def fps_span(self) -> float:
        return self.frames / self.span_s


def ray_run(items: list[str], workers: int, model_path: str, mode: str) -> RayRun:
    """Track ``items`` (one block each) on an actor pool of ``workers``; time the execution."""
    import ray

    ds = ray.data.from_items([{"video": v} for v in items], override_num_blocks=len(items))
    ds = ds.map(TrackVideo, fn_constructor_kwargs={"model_path": model_path, "mode": mode},
                compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1), num_cpus=1)
    with CpuSampler() as sampler:
        started, driver_started = time.perf_counter(), time.process_time()
        done = ds.materialize()
        wall = time.perf_counter() - started
        driver = time.process_time() - driver_started
    rows = done.take_all()
    first, last = min(r["start"] for r in rows), max(r["end"] for r in rows)
    span = last - first
    return RayRun(workers, sum(r["frames"] for r in rows), wall, span, len({r["pid"] for r in rows}),
                  sum(r["end"] - r["start"] for r in rows), sum(r["cpu_s"] for r in rows),
                  min(r["cores"] for r in rows), sampler.busy(first, last), driver)


# ---------------------------------------------------------------- accuracy

def _pixels(track: FaceTrack) -> np.ndarray:
    """(T, 478, 2) landmark positions in frame pixels."""
    return track.lmks[:, :, :2] * np.array([track.width, track.height], np.float32)


def mean_distance(a: FaceTrack, b: FaceTrack) -> float:
    """Mean 2D distance (px) between the landmarks of two tracks, over frames with a face in both."""
    both = a.has_face & b.has_face
    if not both.any():
        return float("nan")
    return float(np.linalg.norm(_pixels(a)[both] - _pixels(b)[both], axis=-1).mean())


def jitter(track: FaceTrack) -> tuple[float, float]:
    """(mean |x(t+1)-x(t)|, mean |x(t+1)-2x(t)+x(t-1)|) in px over runs of frames with a face.

    The first difference includes the real head motion; the second difference removes
    motion at constant velocity and so shows frame-to-frame noise more directly.
    """
    px, ok = _pixels(track), track.has_face
    d1 = np.linalg.norm(px[1:] - px[:-1], axis=-1)[ok[1:] & ok[:-1]]
    d2 = np.linalg.norm(px[2:] - 2 * px[1:-1] + px[:-2], axis=-1)[ok[2:] & ok[1:-1] & ok[:-2]]
    return (float(d1.mean()) if d1.size else float("nan"), float(d2.mean()) if d2.size else float("nan"))


# ---------------------------------------------------------------- report

def median_ratio(num: list[Timing] | list[RayRun], den: list[Timing] | list[RayRun], attr: str = "fps") -> float:
    """Median over repeats of the paired ratio ``num[i].attr / den[i].attr``."""
    return statistics.median(getattr(n, attr) / getattr(d, attr) for n, d in zip(num, den))


def report(single: SingleResult, ray_runs: dict[int, list[RayRun]], videos: list[Path], ray_mode: str,
           copies: int, console: Console) -> dict[str, float]:
    """Print the throughput table, the ratios and the accuracy lines; return the key ratios."""
    t = single.timings
    base_fps = statistics.median(x.fps for x in t["baseline"])
    table = Table(title=f"landmark stage throughput (median of {len(t['baseline'])} repeats)")
    for column in ("method", "frames", "seconds", "frames/s", "x baseline", "frames/CPU-s", "x baseline CPU"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for method in SINGLE_METHODS:
        runs = t[method]
        table.add_row(LABELS[method] + f", 1 core (cpu {single.cpu})", str(runs[0].frames),
                      f"{statistics.median(r.wall_s for r in runs):.2f}",
                      f"{statistics.median(r.fps for r in runs):.1f}",
                      f"{median_ratio(runs, t['baseline']):.2f}",
                      f"{statistics.median(r.fps_cpu for r in runs):.1f}",
                      f"{median_ratio(runs, t['baseline'], 'fps_cpu'):.2f}")
    for workers, runs in ray_runs.items():
        table.add_row(f"ours {ray_mode.upper()}, Ray, {workers} worker{'s' if workers > 1 else ''}",
                      str(runs[0].frames), f"{statistics.median(r.wall_s for r in runs):.2f}",
                      f"{statistics.median(r.fps for r in runs):.1f}",
                      f"{statistics.median(r.fps for r in runs) / base_fps:.2f}", "", "")
    console.print(table)
    console.print("baseline = ffmpeg writes every frame to PNG, then cv2.imread -> RGB -> IMAGE-mode detect per file "
                  "(official style); ours = decord chunks -> FaceLandmarkerRunner.track; x baseline = median of "
                  "the paired per-repeat ratios")
    console.print(f"Ray: {len(videos)} videos x {copies} copies, one block per video, longest first; seconds are "
                  "the whole materialize() (actor start-up included); processing span = first video start -> "
                  "last video end inside the actors:")
    for workers, runs in ray_runs.items():
        console.print(f"  {workers} worker(s): " + ", ".join(
            f"{r.wall_s:.2f} s wall / {r.span_s:.2f} s span ({r.fps:.1f} / {r.fps_span:.1f} frames/s, "
            f"{r.actors} actor(s) on {r.cores}+ cores each, {r.cpu_share:.2f} CPU-s per busy s, "
            f"{r.fps_cpu:.1f} frames per actor CPU-s; other processes kept {r.others_cores:.2f} cores busy, "
            f"the driver {r.driver_s / r.wall_s:.2f})" for r in runs))

    per_core = {m: median_ratio(t[m], t["baseline"]) for m in ("video", "image")}
    per_core_cpu = {m: median_ratio(t[m], t["baseline"], "fps_cpu") for m in ("video", "image")}
    speedup = median_ratio(ray_runs[2], ray_runs[1])
    speedup_span = median_ratio(ray_runs[2], ray_runs[1], "fps_span")
    console.print(f"[bold]per core, ours (1 process) / baseline:[/] VIDEO {per_core['video']:.2f}x, "
                  f"IMAGE {per_core['image']:.2f}x wall on one pinned core; by CPU time VIDEO "
                  f"{per_core_cpu['video']:.2f}x, IMAGE {per_core_cpu['image']:.2f}x (median of paired repeats)")
    console.print("  per repeat (VIDEO, IMAGE wall): " + "; ".join(
        f"{v.fps / b.fps:.2f}x, {i.fps / b.fps:.2f}x" for b, v, i in zip(t["baseline"], t["video"], t["image"])))
    console.print(f"[bold]Ray speed-up 2 workers / 1 worker:[/] {speedup:.2f}x wall "
                  f"(per repeat {', '.join(f'{b.fps / a.fps:.2f}x' for a, b in zip(ray_runs[1], ray_runs[2]))}), "
                  f"{speedup_span:.2f}x on the processing span (actor start-up left out)")

    # accuracy: last pass of each one-process method
    tracks = single.tracks
    acc = Table(title="IMAGE vs VIDEO mode: landmarks (px in frame pixels, ~512)")
    for column in ("video", "frames", "faces V/I/B", "|V-I|", "|I-B|", "jitter V", "jitter I",
                   "2nd diff V", "2nd diff I"):
        acc.add_column(column, justify="right" if column != "video" else "left")
    totals = {"frames": 0, "faces_video": 0, "faces_image": 0, "faces_baseline": 0}
    diffs, diffs_base, jit = [], [], {"video": [], "image": []}
    for k, video in enumerate(videos):
        v, i, b = tracks["video"][k], tracks["image"][k], tracks["baseline"][k]
        jv, ji = jitter(v), jitter(i)
        diffs.append((mean_distance(v, i), int((v.has_face & i.has_face).sum())))
        diffs_base.append((mean_distance(i, b), int((i.has_face & b.has_face).sum())))
        jit["video"].append((jv, len(v.has_face)))
        jit["image"].append((ji, len(i.has_face)))
        totals["frames"] += len(v.has_face)
        for name, tr in (("video", v), ("image", i), ("baseline", b)):
            totals[f"faces_{name}"] += int(tr.has_face.sum())
        acc.add_row(video.name, str(len(v.has_face)),
                    f"{int(v.has_face.sum())}/{int(i.has_face.sum())}/{int(b.has_face.sum())}",
                    f"{diffs[-1][0]:.2f}", f"{diffs_base[-1][0]:.3f}",
                    f"{jv[0]:.2f}", f"{ji[0]:.2f}", f"{jv[1]:.2f}", f"{ji[1]:.2f}")
    console.print(acc)
    console.print("V = VIDEO mode, I = IMAGE mode, B = baseline; |V-I|, |I-B| = mean landmark distance (px) over "
                  "frames with a face in both; jitter = mean |x(t+1) - x(t)| (px, real motion included); 2nd diff "
                  "= mean |x(t+1) - 2 x(t) + x(t-1)| (px, constant-velocity motion removed: mostly noise)")

    def weighted(pairs: list[tuple[float, int]]) -> float:
        good = [(x, w) for x, w in pairs if not np.isnan(x) and w]
        return sum(x * w for x, w in good) / sum(w for _, w in good) if good else float("nan")

    all_diff = weighted(diffs)
    all_base = weighted(diffs_base)
    jv1 = weighted([(j[0], n) for j, n in jit["video"]])
    ji1 = weighted([(j[0], n) for j, n in jit["image"]])
    jv2 = weighted([(j[1], n) for j, n in jit["video"]])
    ji2 = weighted([(j[1], n) for j, n in jit["image"]])
    console.print(f"faces found: VIDEO {totals['faces_video']}/{totals['frames']}, IMAGE "
                  f"{totals['faces_image']}/{totals['frames']}, baseline {totals['faces_baseline']}/{totals['frames']}")
    console.print(f"mean landmark distance VIDEO vs IMAGE: {all_diff:.2f} px; ours IMAGE vs baseline "
                  f"(decord vs ffmpeg->PNG input): {all_base:.3f} px")
    console.print(f"jitter (mean |x(t+1)-x(t)|, real motion included): VIDEO {jv1:.2f} px, IMAGE {ji1:.2f} px; "
                  f"second difference (noise): VIDEO {jv2:.2f} px, IMAGE {ji2:.2f} px")
    return {"per_core_video": per_core["video"], "per_core_image": per_core["image"],
            "per_core_cpu_video": per_core_cpu["video"], "speedup": speedup, "speedup_span": speedup_span}


def verdict(keys: dict[str, float], ray_runs: dict[int, list[RayRun]], ray_mode: str, load_start: float,
            load_end: float, console: Console) -> None:
    """Say plainly whether the two targets were met on this run, and what the measurements show."""
    per_core = keys[f"per_core_{ray_mode}"]
    ok_core = per_core >= TARGET_PER_CORE
    ok_speed = keys["speedup"] >= TARGET_SPEEDUP
    console.print(f"[bold]target per core >= {TARGET_PER_CORE:.1f}x baseline[/] ({ray_mode.upper()} mode, wall, one "
                  f"pinned core): {per_core:.2f}x -> {'MET' if ok_core else 'NOT MET'} on this run")
    console.print(f"[bold]target 2-worker speed-up >= {TARGET_SPEEDUP:.1f}x[/]: {keys['speedup']:.2f}x wall "
                  f"({keys['speedup_span']:.2f}x on the processing span) -> {'MET' if ok_speed else 'NOT MET'} "
                  "on this run")
    def med(attr: str) -> dict[int, float]:
        return {w: statistics.median(getattr(r, attr) for r in runs) for w, runs in ray_runs.items()}

    cores, per_cpu, others, share = med("actor_cores"), med("fps_cpu"), med("others_cores"), med("cpu_share")
    console.print(f"  why (span speed-up = cores the actors got x frames per actor CPU-s): the actors kept "
                  f"{cores[1]:.2f} -> {cores[2]:.2f} cores busy ({cores[2] / cores[1]:.2f}x; each 2-worker actor got "
                  f"{share[2]:.2f} CPU-s per busy s, vs {share[1]:.2f} alone) while other processes kept "
                  f"{others[1]:.2f} / {others[2]:.2f} cores busy; frames per actor CPU-s {per_cpu[1]:.1f} -> "
                  f"{per_cpu[2]:.1f} ({per_cpu[2] / per_cpu[1]:.2f}x)")
    console.print(f"  1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end "
                  f"on {os.cpu_count()} cores")


def media_videos(media: Path) -> list[Path]:
    """The three real clips from ``media``, or the embedded sample's mirror videos without them."""
    videos = [media / name for name in MEDIA_NAMES if (media / name).is_file()]
    return videos or sorted(FALLBACK_MEDIA.glob("*.mp4"))


def main() -> None:
    """Parse arguments, run the one-process methods in a pinned child, then Ray, then report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA,
                        help="folder holding the real clips (default ../shared/fixtures/media)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per method (default 2)")
    parser.add_argument("--copies", type=int, default=4,
                        help="times each video is listed for the Ray runs (default 4)")
    parser.add_argument("--mode", choices=("video", "image"), default="video",
                        help="landmarker mode of the Ray runs (default video, the pipeline's default)")
    parser.add_argument("--verbose", action="store_true", help="keep MediaPipe's C++ log lines")
    args = parser.parse_args()
    if args.repeats < 1 or args.copies < 1:
        parser.error("--repeats and --copies must be at least 1")
    console = Console() if Console().is_terminal else Console(width=120)
    model = str(DEFAULT_MODEL)
    videos = media_videos(args.media)
    if not videos:
        raise SystemExit("no video found")
    load_start = os.getloadavg()[0]
    console.print(f"1-minute load average at the start: {load_start:.1f} on {os.cpu_count()} cores")
    console.print(f"videos: {', '.join(v.name for v in videos)}")
    started = time.perf_counter()

    cpu = sorted(os.sched_getaffinity(0))[-1]
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_init_child,
                             initargs=(cpu, not args.verbose)) as pool:
        single = pool.submit(single_process_runs, [str(v) for v in videos], model, args.repeats).result()
    console.print(f"one-process methods done in {time.perf_counter() - started:.0f} s")

    import ray

    from pipelines.runtime import init_ray

    ray_started = time.perf_counter()
    init_ray(None)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    console.print(f"ray started in {time.perf_counter() - ray_started:.1f} s "
                  f"({ray.cluster_resources().get('CPU', 0):g} CPUs); 1-minute load average before the Ray runs: "
                  f"{os.getloadavg()[0]:.1f}")
    frames = {v: len(t.has_face) for v, t in zip(videos, single.tracks["video"])}
    # longest first, so the last videos to finish are the short ones (balanced 2-worker tail)
    items = [str(v) for v in sorted(videos, key=lambda v: -frames[v]) for _ in range(args.copies)]
    ray_run([str(min(videos, key=frames.get))] * 2, 2, model, args.mode)  # warm-up
    ray_runs: dict[int, list[RayRun]] = {w: [] for w in WORKER_COUNTS}
    for repeat in range(args.repeats):
        for workers in (WORKER_COUNTS if repeat % 2 == 0 else WORKER_COUNTS[::-1]):
            ray_runs[workers].append(ray_run(items, workers, model, args.mode))
    ray.shutdown()

    keys = report(single, ray_runs, videos, args.mode, args.copies, console)
    load_end = os.getloadavg()[0]
    console.print(f"1-minute load average at the end: {load_end:.1f} on {os.cpu_count()} cores; "
                  f"whole run {time.perf_counter() - started:.0f} s")
    verdict(keys, ray_runs, args.mode, load_start, load_end, console)
    console.print("Everything shares one machine (and its noise): read the ratios, not the absolute rates.")


if __name__ == "__main__":
    main()
