"""The whole ``aniportrait-data build`` against a plain-ffmpeg reference, in one run (issue 18).

Workload: 36 clips of 1.5-2.5 s (68 clip-seconds, 2,040 frames at 30 fps) cut from 8 real
sources: the four real videos of ``--media`` (``talking_lyl_7s``, ``talking_hdtf_radio10_0``,
``head_pose_ref``, the 1080x1920 HEVC ``raw_seated_1080x1920_hevc``) and four odd sources
``tests/bad_media.py`` makes from them (variable frame rate, rotated by its tkhd matrix,
513x317 yuv444p in .mkv, no audio stream). They are written as CelebV-HQ metadata (a
``celebvhq_info.json`` with one face box per source: MediaPipe's landmark extent over 8
frames, grown by 25% of its size on each side) and a mirror of links named
``<ytb_id>.<ext>``. Builds use no wav2vec2 (``--wav2vec2 none``), 512 px, 30 fps, 12
clips per shard.

What one run prints:

1. **reference**: one plain ffmpeg per clip (input seek, crop to the same pixel box, fill
   512x512, ``fps=30``, libx264 veryfast crf 18 ``-threads 1``, 16 kHz mono PCM wav; no wav
   for the source without audio), 2 at a time (a thread pool of 2 running argument
   lists). The boxes come from one probe per source made before the clock. It runs at
   niceness 15, as Ray runs its workers and so the build's own ffmpeg: other load on a
   shared machine then slows both alike (on an idle machine niceness changes nothing).
2. **ours**: the whole build as a user sees it, at each of ``--workers`` (default 1 and 2),
   into fresh output and work folders, each in a child process (``--child``: imports,
   ``ray.init``, ``run_build``, ``shutdown_ray`` as the command does; the parent times the
   child's whole life).
   It prints clip-seconds per wall-second and the ratio ours / reference (goal >= 0.5x),
   the phases (start-up + imports, Ray start, process, pack, shutdown), the process
   overhead (process seconds minus stage seconds / workers: actor start-up and
   scheduling, an estimate with 2 workers, which it takes as evenly busy), the stage
   seconds summed over clips and per frame, the driver's peak RSS, whether every clip is
   ok, and whether the builds wrote byte-identical shards and manifest (``release.json``
   sha256s).
3. **fixed costs** on the embedded ``sample`` (3 clips, 9 clip-seconds), same children:
   Ray start, process overhead, pack, the whole fixed cost (wall minus stage seconds /
   workers; goal <= 6 s) and wall / process-phase work (stage seconds / workers; goal <= 2x).
   Then (unless ``--no-running-ray``) two sample builds in a row at the largest worker
   count on one Ray kept running between them (``--address``, as after ``ray start
   --head``): the fixed cost without Ray's start and shutdown, first and warm.
4. ``--scale 36,144,576`` (off by default: a 576-clip build takes about 11 minutes here): the
   same workload repeated under new YouTube ids (new mirror names, same files) to N clips,
   built with the largest worker count and then built again into the same folders
   (resume: no clip and no shard may be redone). Per N: wall per clip-second relative to
   the smallest N (goal: flat within 15%), driver peak RSS, pack seconds, resume seconds.

Besides wall time, every method's CPU seconds are counted (the reference's ffmpeg; for a
build, the driver and every process it starts, polled every 0.5 s because Ray does not
reap the workers it ends), and clip-seconds per CPU-second compared: other load on a
shared machine moves them less than wall times. The methods alternate their order on each
repeat; ratios are medians of per-repeat ratios. A hash of the packages' Python files is
taken before and after each build: the working tree edited during a run is reported, not
taken for non-determinism. It asserts nothing about time. Read the ratios, not the rates.

How to read it: the reference only cuts; a build also tracks landmarks (face stage), draws
the lossless pose video (render) and scores each clip (quality), so its clip stage is the
part comparable with the reference (ms per frame against the reference's CPU ms per frame),
and the other stages' share of the stage seconds bounds ours / reference even with no fixed
cost at all. The fixed costs are the rest: start-up, Ray start, actor start-up (overhead),
pack and shutdown.

    python benchmarks/bench_throughput.py [--repeats 1] [--workers 1,2] [--scale 36,144]
                                          [--no-running-ray] [--keep DIR] [--media DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from aniportrait.crop import PixelBox

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MEDIA = REPO.parent / "shared" / "fixtures" / "media"
#: Clip lengths in seconds, cycled along each source (from a different place per source).
CLIP_LENGTHS_S = (2.0, 1.5, 2.5, 1.5)
#: How far before its end a source's last clip stops.
END_MARGIN_S = 0.05
FPS = 30
SIZE = 512
SHARD_SAMPLES = 12
RESULT_TAG = "BENCH-RESULT "
#: Ray starts its workers (and so the build's ffmpeg) at niceness 15; the reference runs at
#: the same, so that other load on a shared machine slows both alike (idle: no difference).
REFERENCE_NICE = 15
#: The code a build runs: hashed before and after each build, so that edits made to the working
#: tree while the benchmark runs show up instead of passing for non-determinism.
CODE_PACKAGES = ("aniportrait", "pipelines", "datasets_spec")


@dataclass(frozen=True)
class Source:
    """One source video: its id stem (8 characters, a 3-digit copy number makes it an
    11-character YouTube id), its file, its CelebV-HQ face box and how many clips it gives."""

    tag: str
    #: a file of ``--media``, or an entry of ``tests/bad_media.py``'s corpus
    file: str
    #: normalised (top, bottom, left, right)
    box: tuple[float, float, float, float]
    clips: int
    corpus: bool = False


SOURCES = (
    Source("lyltalk_", "talking_lyl_7s.mp4", (0.018, 0.867, 0.206, 0.913), 7),
    Source("hdtfrad_", "talking_hdtf_radio10_0.mp4", (0.146, 0.909, 0.181, 0.925), 2),
    Source("headpose", "head_pose_ref.mp4", (0.111, 0.988, 0.048, 0.864), 5),
    Source("seatedhv", "raw_seated_1080x1920_hevc.mp4", (0.282, 0.516, 0.366, 0.738), 6),
    Source("varfps__", "var_fps_vfr", (0.020, 0.851, 0.200, 0.918), 4, corpus=True),
    Source("rotate90", "rotated_90_", (0.020, 0.848, 0.100, 1.000), 4, corpus=True),
    Source("odd513x_", "odd_513x317", (0.031, 0.836, 0.318, 0.751), 4, corpus=True),
    Source("noaudio_", "no_audio___", (0.018, 0.849, 0.203, 0.918), 4, corpus=True),
)
CLIPS_PER_COPY = sum(s.clips for s in SOURCES)


@dataclass(frozen=True)
class Clip:
    """One clip of the workload."""

    key: str
    ytb_id: str
    path: str
    start_s: float
    end_s: float
    box: tuple[float, float, float, float]

    @property
    def seconds(self) -> float:
        """Its length at the output frame rate (whole frames), as the build counts it."""
        return int((self.end_s - self.start_s) * FPS + 1e-6) / FPS


@dataclass(frozen=True)
class Workload:
    """A CelebV-HQ dataset on disk: its metadata file, its mirror, its clips."""

    metadata: str
    mirror: str
    clips: tuple[Clip, ...]

    @property
    def clip_s(self) -> float:
        return sum(c.seconds for c in self.clips)


@dataclass
class BuildRun:
    """One child build: the parent's wall time and what the child measured."""

    label: str
    workers: int
    wall_s: float
    startup_s: float
    ray_start_s: float
    process_s: float
    pack_s: float
    shutdown_s: float
    stage_s: dict[str, float]
    clips: int
    ok: int
    resumed: int
    frames: int
    clip_s: float
    driver_rss_mb: float
    worker_rss_mb: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    shard_sha256: tuple[str, ...] = ()
    manifest_sha256: str = ""
    #: CPU seconds of the driver and every process it started (Ray, workers, ffmpeg)
    cpu_s: float = 0.0
    #: the code's fingerprint before the build, and whether it changed during it
    code: str = ""
    code_changed: bool = False

    @property
    def throughput(self) -> float:
        """Clip-seconds per wall-second."""
        return self.clip_s / self.wall_s

    @property
    def stage_sum(self) -> float:
        return sum(self.stage_s.values())

    @property
    def overhead_s(self) -> float:
        """Process-phase seconds beyond the stage work (see the module docstring)."""
        return self.process_s - self.stage_sum / self.workers

    @property
    def fixed_s(self) -> float:
        """Whole wall seconds beyond the stage work spread over the workers."""
        return self.wall_s - self.stage_sum / self.workers

    @property
    def exit_s(self) -> float:
        """Wall seconds the child measured nothing of: interpreter exit (Ray's atexit hooks)."""
        return self.wall_s - (self.startup_s + self.ray_start_s + self.process_s + self.pack_s + self.shutdown_s)

    @property
    def identity(self) -> tuple[tuple[str, ...], str]:
        return self.shard_sha256, self.manifest_sha256


@dataclass(frozen=True)
class RefRun:
    """One reference pass."""

    clip_s: float
    wall_s: float
    cpu_s: float

    @property
    def throughput(self) -> float:
        return self.clip_s / self.wall_s


# ---------------------------------------------------------------- workload

def _bad_media() -> Any:
    """``tests/bad_media.py`` (``tests`` is not an installed package)."""
    spec = importlib.util.spec_from_file_location("bad_media", REPO / "tests" / "bad_media.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_files(media: Path, folder: Path) -> dict[str, Path]:
    """Tag -> file of every source; the corpus entries are made into ``folder``."""
    bad_media = _bad_media()
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for source in SOURCES:
        if source.corpus:
            ext, make = bad_media.BUILDERS[source.file]
            files[source.tag] = folder / f"{source.file}.{ext}"
            make(media, files[source.tag])
        else:
            files[source.tag] = media / source.file
            if not files[source.tag].is_file():
                raise SystemExit(f"{files[source.tag]} not found (--media)")
    return files


def spans(duration_s: float, count: int, shift: int) -> list[tuple[float, float]]:
    """``count`` spans spread evenly over the source, lengths cycled from ``shift``."""
    usable = duration_s - END_MARGIN_S
    out = []
    for k in range(count):
        length = min(CLIP_LENGTHS_S[(shift + k) % len(CLIP_LENGTHS_S)], usable)
        start = round((usable - length) * k / max(1, count - 1), 2)
        out.append((start, round(start + length, 2)))
    return out


def plan_clips(files: dict[str, Path], durations: dict[str, float], count: int) -> list[Clip]:
    """The first ``count`` clips of the workload repeated under new ids (copy 000, 001, ...)."""
    clips: list[Clip] = []
    copy = 0
    while len(clips) < count:
        for i, source in enumerate(SOURCES):
            ytb_id = f"{source.tag}{copy:03d}"
            for k, (start, end) in enumerate(spans(durations[source.tag], source.clips, i)):
                clips.append(Clip(f"{ytb_id}_{k}", ytb_id, str(files[source.tag]), start, end, source.box))
        copy += 1
    return clips[:count]


def write_workload(clips: list[Clip], folder: Path) -> Workload:
    """``celebvhq_info.json`` and a mirror of links for ``clips``."""
    mirror = folder / "mirror"
    mirror.mkdir(parents=True)
    entries: dict[str, Any] = {}
    for clip in clips:
        link = mirror / f"{clip.ytb_id}{Path(clip.path).suffix}"
        if not link.exists():
            link.symlink_to(Path(clip.path).resolve())
        top, bottom, left, right = clip.box
        entries[clip.key] = {
            "ytb_id": clip.ytb_id, "duration": {"start_sec": clip.start_s, "end_sec": clip.end_s},
            "bbox": {"top": top, "bottom": bottom, "left": left, "right": right},
            "attributes": {"appearance": [0, 1], "action": [1], "emotion": {"sep_flag": False, "labels": "neutral"}},
            "version": "v0.1"}
    info = {"meta_info": {"appearance_mapping": ["blurry", "young"], "action_mapping": ["talk"]}, "clips": entries}
    metadata = folder / "celebvhq_info.json"
    metadata.write_text(json.dumps(info))
    return Workload(str(metadata), str(mirror), tuple(clips))


# ---------------------------------------------------------------- reference

def reference_args(clip: Clip, box: PixelBox, has_audio: bool, out: Path) -> list[str]:
    """One plain ffmpeg cutting ``clip`` to a 512x512 30 fps mp4 and a 16 kHz mono wav."""
    args = ["nice", "-n", str(REFERENCE_NICE), "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-ss", f"{clip.start_s:.3f}", "-t", f"{clip.seconds:.6f}", "-i", clip.path,
            "-map", "0:v:0", "-vf", f"fps={FPS},crop={box.w}:{box.h}:{box.x}:{box.y},"
            f"scale={SIZE}:{SIZE}:force_original_aspect_ratio=increase,crop={SIZE}:{SIZE},setsar=1",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-threads", "1", "-pix_fmt", "yuv420p",
            "-an", str(out / f"{clip.key}.mp4")]
    if has_audio:
        args += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out / f"{clip.key}.wav")]
    return args


def reference_jobs(clips: tuple[Clip, ...], out: Path) -> list[list[str]]:
    """The argument lists, boxes resolved as the build does (one probe per source)."""
    from aniportrait.crop import resolve_crop
    from aniportrait.media.probe import probe
    from aniportrait.schema import CropSpec
    from datasets_spec.celebvhq import CROP_EXPAND

    infos = {path: probe(path) for path in {c.path for c in clips}}
    jobs = []
    for clip in clips:
        top, bottom, left, right = clip.box
        info = infos[clip.path]
        box = resolve_crop(CropSpec(kind="normalized", x0=left, y0=top, x1=right, y1=bottom, expand=CROP_EXPAND,
                                    square=True), info.width, info.height)
        if any(box.border):
            raise SystemExit(f"{clip.key}: box beyond the frame, the reference does not pad")
        jobs.append(reference_args(clip, box, info.has_audio, out))
    return jobs


def reference_pass(workload: Workload, out: Path) -> RefRun:
    """Run every clip's ffmpeg, 2 at a time, into a fresh ``out``."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    jobs = reference_jobs(workload.clips, out)
    cpu = _children_cpu_s()
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: subprocess.run(args, check=True), jobs))
    return RefRun(workload.clip_s, time.perf_counter() - started, _children_cpu_s() - cpu)


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the reference's ffmpeg)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def code_fingerprint() -> str:
    """A hash of the Python files of the packages a build runs."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# ---------------------------------------------------------------- ours, in a child process

def child_main(spec: dict[str, Any]) -> None:
    """Time imports, Ray start, ``run_build`` and shutdown; print one result line."""
    entered = time.time()
    from pipelines.build.config import BuildConfig
    from pipelines.build.run import run_build
    from pipelines.runtime import init_ray, shutdown_ray

    imported = time.time()
    cpu = TreeCpu()
    init_ray(spec["address"])
    ray_started = time.time()
    cfg = BuildConfig(dataset=spec["dataset"], out=spec["out"], work_dir=spec["work"], metadata=spec["metadata"],
                      mirror=spec["mirror"], address=spec["address"], workers=spec["workers"],
                      shard_samples=spec["shard_samples"])
    result = run_build(cfg, Console(quiet=True))
    built = time.time()
    cpu_s = cpu.stop()
    shutdown_ray()
    ok = [s for s in result.states if s.ok]
    line = {
        "startup_s": imported - spec["launched"], "ray_start_s": ray_started - imported,
        "process_s": result.timings_s["process"], "pack_s": result.timings_s["pack"],
        "build_s": built - ray_started, "shutdown_s": time.time() - built, "entered_s": entered - spec["launched"],
        "stage_s": result.stage_seconds, "clips": len(result.states), "ok": len(ok), "resumed": result.resumed,
        "frames": sum(int(s.info.frames or 0) for s in ok), "clip_s": sum(float(s.info.duration_s) for s in ok),
        "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": result.worker_peak_rss_mb,
        "failures": [f"{s.record.clip_id}: {s.status} in {s.failed_stage}: {s.error}" for s in result.states
                     if not s.ok],
        "shard_sha256": [s["sha256"] for s in result.release["shards"]],
        "manifest_sha256": result.release["manifest"]["sha256"], "cpu_s": cpu_s,
    }
    print(RESULT_TAG + json.dumps(line), flush=True)


class TreeCpu:
    """CPU seconds of this process and of every process it starts, polled every
    ``interval_s`` in a thread.

    A process still alive at the end counts with its own and its reaped children's times.
    One that ended counts through its parent's children times when the parent waited for
    it (ffmpeg, ffprobe: ``subprocess``), but the raylet does not reap the workers it ends,
    so a worker that ended counts by its last poll (up to ``interval_s`` of its CPU missed).
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        self.interval_s = interval_s
        #: (pid, start time) -> (own CPU s, reaped children's CPU s, parent pid)
        self.seen: dict[tuple[int, float], tuple[float, float, int]] = {}
        self.raylets: set[int] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _poll(self) -> set[tuple[int, float]]:
        """Record every descendant's times; return the keys of those alive now."""
        import psutil

        alive = set()
        for process in psutil.Process().children(recursive=True):
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    key = (process.pid, process.create_time())
                    parent = process.ppid()
                    if process.name() == "raylet":
                        self.raylets.add(process.pid)
            except psutil.Error:
                continue
            alive.add(key)
            self.seen[key] = (times.user + times.system, times.children_user + times.children_system, parent)
        return alive

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self._poll()

    def stop(self) -> float:
        """Stop polling; the CPU seconds of this process and of every process it started."""
        self.stopped.set()
        self.thread.join()
        alive = self._poll()
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        total = sum(u.ru_utime + u.ru_stime for u in usage)
        for key, (own, children, parent) in self.seen.items():
            if key in alive or parent in self.raylets:
                total += own + children
        return total


def child_build(label: str, workers: int, dataset: str, out: Path, work: Path, metadata: str | None,
                mirror: str, address: str | None = None) -> BuildRun:
    """Run one build in a child process; the wall time is the child's whole life.

    With ``address`` the child connects to that running Ray (``--address``) instead of
    starting its own; its ``ray.shutdown`` then only disconnects.
    """
    spec = {"dataset": dataset, "out": str(out), "work": str(work), "metadata": metadata, "mirror": mirror,
            "address": address, "workers": workers, "shard_samples": SHARD_SAMPLES, "launched": time.time()}
    code = code_fingerprint()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    lines = [x for x in done.stdout.splitlines() if x.startswith(RESULT_TAG)]
    if done.returncode or not lines:
        raise SystemExit(f"build {label} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    r = json.loads(lines[-1][len(RESULT_TAG):])
    return BuildRun(label, workers, wall, r["startup_s"], r["ray_start_s"], r["process_s"], r["pack_s"],
                    r["shutdown_s"], r["stage_s"], r["clips"], r["ok"], r["resumed"], r["frames"], r["clip_s"],
                    r["driver_rss_mb"], r["worker_rss_mb"], r["failures"], tuple(r["shard_sha256"]),
                    r["manifest_sha256"], r["cpu_s"], code, code != code_fingerprint())


def fresh_build(root: Path, label: str, workers: int, dataset: str, metadata: str | None, mirror: str,
                address: str | None = None) -> BuildRun:
    """A build into new ``out-<label>`` and ``work-<label>`` folders."""
    out, work = root / f"out-{label}", root / f"work-{label}"
    for folder in (out, work):
        shutil.rmtree(folder, ignore_errors=True)
    return child_build(label, workers, dataset, out, work, metadata, mirror, address)


#: The program of the process that holds a running Ray for :class:`RunningRay`.
_HOLD_RAY = """
import sys, ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


class RunningRay:
    """A local Ray that outlives single builds, as ``ray start --head`` keeps one for
    ``--address auto``: a helper process starts it, prints its address and shuts it down
    when its stdin closes (its own Ray only; nothing else on the machine is touched)."""

    def __init__(self, cpus: int) -> None:
        # no token authentication on this loopback-only Ray (``ray start --head`` turns it on)
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        self.process = subprocess.Popen([sys.executable, "-c", _HOLD_RAY, str(cpus)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.address = self.process.stdout.readline().strip()
        if not self.address:
            raise SystemExit("the helper process could not start Ray")

    def close(self) -> None:
        """Shut the helper's Ray down and wait for it."""
        self.process.stdin.close()
        self.process.wait(timeout=120)


# ---------------------------------------------------------------- report

def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report_throughput(refs: list[RefRun], ours: dict[int, list[BuildRun]], console: Console) -> None:
    """Reference vs ours: clip-s per wall-s and ratios (medians of per-repeat ratios)."""
    table = _table(f"whole build vs plain ffmpeg, {refs[0].clip_s:.1f} clip-s (median of {len(refs)})",
                   ["method", "wall s", "clip-s / wall-s", "ours / reference", "per repeat", "CPU s",
                    "clip-s / CPU-s", "ours / reference (CPU)"])
    table.add_row("reference: ffmpeg per clip, 2 at a time", f"{_median([r.wall_s for r in refs]):.1f}",
                  f"{_median([r.throughput for r in refs]):.2f}", "1.00", "", f"{_median([r.cpu_s for r in refs]):.1f}",
                  f"{_median([r.clip_s / r.cpu_s for r in refs]):.2f}", "1.00")
    for workers, runs in ours.items():
        each = [o.throughput / r.throughput for o, r in zip(runs, refs)]
        by_cpu = [(o.clip_s / o.cpu_s) / (r.clip_s / r.cpu_s) for o, r in zip(runs, refs)]
        table.add_row(f"ours, whole build, {workers} worker{'s' if workers > 1 else ''}",
                      f"{_median([r.wall_s for r in runs]):.1f}", f"{_median([r.throughput for r in runs]):.2f}",
                      f"[bold]{_median(each):.2f}x[/]", ", ".join(f"{x:.2f}" for x in each),
                      f"{_median([r.cpu_s for r in runs]):.1f}", f"{_median([r.clip_s / r.cpu_s for r in runs]):.2f}",
                      f"{_median(by_cpu):.2f}x")
    console.print(table)
    console.print("CPU s: the reference's ffmpeg processes; ours: the driver and every process it started (Ray's "
                  "own, workers, ffmpeg), Ray start included. Other load disturbs CPU seconds less than wall seconds.")
    if 1 in ours and 2 in ours:
        each = [b.throughput / a.throughput for a, b in zip(ours[1], ours[2])]
        console.print(f"2 workers / 1 worker: {_median(each):.2f}x (per repeat {', '.join(f'{x:.2f}' for x in each)})")


def report_phases(title: str, runs: list[BuildRun], console: Console) -> None:
    """Per build: phases, process overhead, fixed cost, memory, clips ok."""
    table = _table(title, ["build", "wall s", "start+imports", "Ray start", "process", "pack", "shutdown", "exit",
                           "stage/w", "overhead", "fixed", "wall/(stage/w)", "CPU s", "driver MiB", "worker MiB",
                           "clips ok"])
    for r in runs:
        work = r.stage_sum / r.workers
        table.add_row(r.label, f"{r.wall_s:.1f}", f"{r.startup_s:.1f}", f"{r.ray_start_s:.1f}", f"{r.process_s:.1f}",
                      f"{r.pack_s:.2f}", f"{r.shutdown_s:.1f}", f"{r.exit_s:.1f}", f"{work:.1f}", f"{r.overhead_s:.1f}",
                      f"{r.fixed_s:.1f}", f"{r.wall_s / work:.2f}x" if work else "-", f"{r.cpu_s:.1f}",
                      f"{r.driver_rss_mb:.0f}", f"{max(r.worker_rss_mb.values(), default=0):.0f}", f"{r.ok}/{r.clips}")
    console.print(table)
    for r in runs:
        for failure in r.failures:
            console.print(f"[red]{r.label}: {failure}[/]")
    console.print("stage/w: stage seconds / workers; overhead: process - stage/w (actor start-up, scheduling); "
                  "fixed: wall - stage/w; exit: interpreter exit after ray.shutdown")


def report_stages(runs: list[BuildRun], console: Console) -> None:
    """Seconds per stage summed over clips, and ms per frame, per build."""
    stages = list(dict.fromkeys(s for r in runs for s in r.stage_s))
    table = _table("stage s summed over clips (ms/frame)", ["stage", *(r.label for r in runs)])
    for stage in [*stages, "sum"]:
        cells = []
        for r in runs:
            seconds = r.stage_sum if stage == "sum" else r.stage_s.get(stage, 0.0)
            cells.append(f"{seconds:.1f} ({1000 * seconds / max(1, r.frames):.1f})")
        table.add_row(stage, *cells)
    console.print(table)
    console.print(", ".join(f"{r.label}: {r.frames} frames, {r.clip_s:.1f} clip-s" for r in runs))


def report_identity(runs: list[BuildRun], console: Console) -> None:
    """Whether every build wrote the same shards and manifest."""
    ids = {r.identity for r in runs}
    shards = len(runs[0].shard_sha256)
    console.print(f"shards ({shards}) and manifest of {len(runs)} builds: "
                  + ("[bold]byte-identical[/]" if len(ids) == 1 else "[bold red]DIFFERENT[/]"))
    if len({r.code for r in runs}) > 1 or any(r.code_changed for r in runs):
        console.print("[yellow]the code (aniportrait, pipelines, datasets_spec) changed during these builds: "
                      "the identity check compares different code[/]")


@dataclass
class ScaleRow:
    """One ``--scale`` size: the build and its resume."""

    clips: int
    build: BuildRun
    resume: BuildRun
    shards_kept: bool


def report_scale(rows: list[ScaleRow], console: Console) -> None:
    """Wall per clip-second, memory, pack and resume seconds per N."""
    base = rows[0].build.wall_s / rows[0].build.clip_s
    table = _table(f"scale: workload repeated under new ids, {rows[0].build.workers} workers",
                   ["clips", "clip-s", "wall s", "wall / clip-s", "x smallest N", "process s", "pack s",
                    "driver MiB", "resume wall s", "resume process+pack s", "resume driver MiB", "all ok",
                    "nothing redone"])
    for row in rows:
        b, r = row.build, row.resume
        per = b.wall_s / b.clip_s
        kept = r.resumed == r.clips and not r.stage_sum and row.shards_kept and r.identity == b.identity
        table.add_row(str(row.clips), f"{b.clip_s:.1f}", f"{b.wall_s:.1f}", f"{per:.3f}", f"{per / base:.2f}",
                      f"{b.process_s:.1f}", f"{b.pack_s:.2f}", f"{b.driver_rss_mb:.0f}", f"{r.wall_s:.1f}",
                      f"{r.process_s + r.pack_s:.2f}", f"{r.driver_rss_mb:.0f}",
                      "yes" if b.ok == b.clips == row.clips else f"NO ({b.ok}/{b.clips})",
                      "yes" if kept else "NO")
    console.print(table)
    for row in rows:
        for failure in row.build.failures:
            console.print(f"[red]scale {row.clips}: {failure}[/]")


# ---------------------------------------------------------------- main

def shard_times(out: Path) -> dict[str, int]:
    """Shard file -> modification time (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in out.rglob("*.tar")}


def scale_runs(sizes: list[int], workers: int, files: dict[str, Path], durations: dict[str, float], root: Path,
               console: Console) -> list[ScaleRow]:
    """Build each size into fresh folders, then once more into the same ones (resume)."""
    rows = []
    for n in sizes:
        folder = root / f"scale-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        workload = write_workload(plan_clips(files, durations, n), folder)
        out, work = folder / "out", folder / "work"
        build = child_build(f"scale-{n}", workers, "celebvhq", out, work, workload.metadata, workload.mirror)
        before = shard_times(out)
        resume = child_build(f"scale-{n}-resume", workers, "celebvhq", out, work, workload.metadata, workload.mirror)
        rows.append(ScaleRow(n, build, resume, bool(before) and before == shard_times(out)))
        console.print(f"scale {n}: build {build.wall_s:.1f} s, resume {resume.wall_s:.1f} s; {_load()}")
    return rows


def run_all(args: argparse.Namespace, root: Path, console: Console) -> None:
    """Make the workload, run the timed passes, print the report."""
    from aniportrait.media.probe import probe
    from datasets_spec import sample

    files = source_files(args.media, root / "sources")
    durations = {tag: probe(path).duration_s for tag, path in files.items()}
    workload = write_workload(plan_clips(files, durations, CLIPS_PER_COPY), root / "workload")
    console.print(f"workload: {len(workload.clips)} clips, {workload.clip_s:.1f} clip-s from {len(SOURCES)} sources; "
                  f"workers {args.workers}; repeats {args.repeats}")
    refs: list[RefRun] = []
    ours: dict[int, list[BuildRun]] = {w: [] for w in args.workers}
    samples: dict[int, list[BuildRun]] = {w: [] for w in args.workers}
    sample_mirror = str(sample.default_mirror())
    methods = ["reference", *(f"ours-{w}" for w in args.workers), *(f"sample-{w}" for w in args.workers)]
    for repeat in range(args.repeats):
        for method in methods if repeat % 2 == 0 else methods[::-1]:
            kind, _, count = method.partition("-")
            if kind == "reference":
                refs.append(reference_pass(workload, root / "reference"))
                console.print(f"repeat {repeat + 1} reference: {refs[-1].wall_s:.1f} s; {_load()}")
                continue
            label = f"{method} #{repeat + 1}"
            if kind == "ours":
                run = fresh_build(root, method, int(count), "celebvhq", workload.metadata, workload.mirror)
                ours[int(count)].append(run)
            else:
                run = fresh_build(root, method, int(count), "sample", None, sample_mirror)
                samples[int(count)].append(run)
            run.label = label
            console.print(f"repeat {repeat + 1} {method}: {run.wall_s:.1f} s, {run.ok}/{run.clips} ok; {_load()}")
    report_throughput(refs, ours, console)
    everyone = [r for runs in ours.values() for r in runs]
    report_phases("ours, whole build, per run (seconds)", everyone, console)
    report_stages(everyone, console)
    report_identity(everyone, console)
    sample_runs = [r for runs in samples.values() for r in runs]
    if args.running_ray:
        sample_runs += running_ray_samples(max(args.workers), root, sample_mirror, console)
    report_phases("fixed costs on the embedded sample (goals: fixed <= 6 s, wall <= 2x stage/w)", sample_runs, console)
    report_stages(sample_runs, console)
    report_identity(sample_runs, console)
    if args.scale:
        report_scale(scale_runs(args.scale, max(args.workers), files, durations, root, console), console)


def running_ray_samples(workers: int, root: Path, mirror: str, console: Console) -> list[BuildRun]:
    """Two sample builds in a row on one running Ray: the Ray start and shutdown leave the
    fixed cost; the second build finds the idle workers the first one left."""
    held = RunningRay(workers)
    try:
        runs = []
        for n in (1, 2):
            run = fresh_build(root, f"running-{n}", workers, "sample", None, mirror, held.address)
            run.label = f"sample-{workers} on a running Ray, build {n}"
            console.print(f"{run.label}: {run.wall_s:.1f} s, {run.ok}/{run.clips} ok; {_load()}")
            runs.append(run)
        return runs
    finally:
        held.close()


def _load() -> str:
    """The load averages (1, 5, 15 minutes)."""
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _counts(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("counts must be at least 1")
    return values


def main() -> None:
    """Parse arguments; run as the parent, or as a ``--child`` build."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="passes of every method (default 1)")
    parser.add_argument("--workers", type=_counts, default=[1, 2], help="worker counts (default 1,2)")
    parser.add_argument("--scale", type=_counts, default=[], help="clip counts, e.g. 36,144,576 (default: off)")
    parser.add_argument("--no-running-ray", dest="running_ray", action="store_false",
                        help="skip the two sample builds on a running Ray (--address)")
    parser.add_argument("--keep", type=Path, help="keep every output in this folder (default: a temporary one)")
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA, help="the real media folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    console = Console() if Console().is_terminal else Console(width=200)
    started = time.perf_counter()
    console.print(f"{_load()} at the start, {os.cpu_count()} cores; code {code_fingerprint()}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run_all(args, args.keep.resolve(), console)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
            run_all(args, Path(tmp), console)
    console.print(f"{_load()} at the end; code {code_fingerprint()}; whole run {time.perf_counter() - started:.0f} s. "
                  "Shared machine: read the ratios, not the rates.")


if __name__ == "__main__":
    main()
