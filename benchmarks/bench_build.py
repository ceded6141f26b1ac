"""The whole build of the embedded sample at 1 and 2 Ray workers, against a sequential
official-style script measured in the same run.

* ours: ``run_build`` of the ``sample`` dataset (3 clips, 9 clip-seconds; mirror = the
  embedded videos, no wav2vec2) into fresh output and work folders, ``workers=1`` and
  ``workers=2``. Ray is started once before the clock (its start-up is printed apart);
  each build's fixed costs (process-phase overhead: actor start-up; pack) are printed
  with the rest. Per-stage seconds and the peak memory of each stage worker come from
  ``BuildResult`` (``stage_seconds``, ``worker_peak_rss_mb``).
* ``--clips N``: a larger workload made of the same two videos, so the fixed cost of a
  build is spread over more clips: N clips of 1-2 s at different offsets, in HDTF-format
  metadata of the ``sample`` dataset whose sources are links to the two mirror videos
  under other names (``LylTalking00``, ``Radio1000``, ...; 6 clips, 9 clip-seconds per
  pair of sources).
* baseline, one process (a spawned child), clip after clip as the official preprocessing
  does: ``ffmpeg`` cuts the clip (same seek, crop and 512x512 / 30 fps filter as ours) to
  PNG frames in a temporary folder, then per frame ``cv2.imread`` -> RGB -> MediaPipe
  IMAGE-mode ``detect``, the same mesh and pose math (``landmarks_to_mesh``,
  ``matrix_to_pose6d``) and the pose image (``draw_pose_image``) written as a PNG.

The three methods alternate their order on each repeat; ratios are medians of the
per-repeat ratios of clip-seconds per wall-second. It asserts nothing about time.

    python benchmarks/bench_build.py [--repeats R] [--clips N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2  # before decord (imported by aniportrait.landmarks): decord first breaks cv2's PNG codec
import numpy as np
from rich.console import Console
from rich.table import Table

from aniportrait.crop import resolve_crop
from aniportrait.face import DEFAULT_MODEL
from aniportrait.geometry import landmarks_to_mesh
from aniportrait.landmarks import result_arrays
from aniportrait.media.cut import CutSettings, plan_cut, video_filter
from aniportrait.media.download import find_in_mirror
from aniportrait.media.probe import probe, run_tool
from aniportrait.pose import matrix_to_pose6d
from aniportrait.render import draw_pose_image
from aniportrait.schema import ClipRecord
from datasets_spec import sample
from pipelines.build.config import BuildConfig

#: The sample's two videos: name, URL, height (``resolution``), ``crop_wh`` box, and the
#: clips of one copy (``annotion_time`` spans of 1-2 s, back to back).
SOURCES = (("LylTalking", "https://github.com/Zejun-Yang/AniPortrait", 516, "0 514 1 514",
            ("00:00-00:02", "00:02-00:03", "00:03-00:05", "00:05-00:07")),
           ("Radio10", "https://www.youtube.com/watch?v=ZoRK17RCZHY&t=6s", 512, "0 512 0 512",
            ("00:00-00:01", "00:01-00:02")))
METHODS = ("baseline", "ours-1", "ours-2")
LABELS = {"baseline": "baseline (ffmpeg -> PNG, IMAGE mode, 1 process)", "ours-1": "ours, Ray, 1 worker",
          "ours-2": "ours, Ray, 2 workers"}


@dataclass
class Run:
    """One timed pass of a method over the sample's clips."""

    method: str
    clip_s: float
    wall_s: float
    stage_s: dict[str, float]
    #: worker -> peak resident memory (MiB)
    peak_mb: dict[str, float] = field(default_factory=dict)
    shard_sha256: tuple[str, ...] = ()
    #: ours only: ``BuildResult.timings_s`` (process and pack phases)
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Clip-seconds per wall-second."""
        return self.clip_s / self.wall_s


# ---------------------------------------------------------------- baseline, one process

def _image_landmarker(model_path: str):
    """An IMAGE-mode FaceLandmarker configured as the official ``LMKExtractor``."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path), running_mode=vision.RunningMode.IMAGE,
        num_faces=1, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
    return vision.FaceLandmarker.create_from_options(options)


def baseline_pass(records: list[ClipRecord], mirror: str, model_path: str) -> Run:
    """The official-style script over ``records``, timed as a whole (landmarker creation included)."""
    import mediapipe as mp

    settings = CutSettings()
    stage_s = {"cut to PNG": 0.0, "read + landmarks": 0.0, "mesh + pose": 0.0, "pose PNG": 0.0}
    clip_s = 0.0
    started = time.perf_counter()
    landmarker = _image_landmarker(model_path)
    with tempfile.TemporaryDirectory(prefix="bench-build-baseline-") as tmp_name:
        for record in records:
            t0 = time.perf_counter()
            source = find_in_mirror(mirror, record.mirror_names)
            info = probe(source)
            start_s, end_s = record.time_span()
            plan = plan_cut(start_s, end_s, resolve_crop(record.crop, info.width, info.height), settings,
                            source_duration_s=info.duration_s, with_audio=False,
                            seek_back_s=0.5 / record.source_fps if record.source_fps else 0.0)
            frames_dir, pose_dir = Path(tmp_name) / record.clip_id / "frames", Path(tmp_name) / record.clip_id / "pose"
            frames_dir.mkdir(parents=True)
            pose_dir.mkdir()
            run_tool(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{plan.seek_s:.6f}",
                      "-i", str(source), "-vf", video_filter(plan.box, settings), "-frames:v", str(plan.frames),
                      str(frames_dir / "%05d.png")], f"cut {record.clip_id} to PNG frames")
            stage_s["cut to PNG"] += time.perf_counter() - t0
            pngs = sorted(frames_dir.glob("*.png"))
            clip_s += len(pngs) / settings.fps
            for png in pngs:
                t0 = time.perf_counter()
                bgr = cv2.imread(str(png))
                height, width = bgr.shape[:2]
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                lmks, _, _, found = result_arrays(landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                                             data=rgb)))
                t1 = time.perf_counter()
                if found:
                    _, matrix = landmarks_to_mesh(lmks.astype(np.float64), width, height)
                    matrix_to_pose6d(matrix)
                t2 = time.perf_counter()
                pose = (draw_pose_image(lmks[:, :2], width, height, normalized=True) if found
                        else np.zeros((height, width, 3), np.uint8))
                cv2.imwrite(str(pose_dir / png.name), cv2.cvtColor(pose, cv2.COLOR_RGB2BGR))
                t3 = time.perf_counter()
                stage_s["read + landmarks"] += t1 - t0
                stage_s["mesh + pose"] += t2 - t1
                stage_s["pose PNG"] += t3 - t2
    landmarker.close()
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ffmpeg = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return Run("baseline", clip_s, wall, stage_s, {"script": own, "ffmpeg (largest)": ffmpeg})


# ---------------------------------------------------------------- workload

@dataclass(frozen=True)
class Workload:
    """What the three methods build: the ``sample`` dataset's metadata and mirror."""

    mirror: str
    #: None: the embedded sample's own lists
    metadata: str | None = None

    def config(self, out: str, work_dir: str, workers: int | None = None) -> BuildConfig:
        return BuildConfig(dataset="sample", out=out, work_dir=work_dir, metadata=self.metadata,
                           mirror=self.mirror, workers=workers)


def write_workload(folder: Path, clips: int) -> Workload:
    """``clips`` clips in HDTF lists, over links to the sample's videos (see the module docstring)."""
    mirror, lists = folder / "mirror", folder / "metadata"
    mirror.mkdir(parents=True)
    lists.mkdir()
    urls, heights, times, crops = [], [], [], []
    copy = 0
    while clips > 0:
        for video, url, height, box, spans in SOURCES:
            spans = spans[:clips]
            if not spans:
                break
            name = f"{video}{copy:02d}"
            (mirror / f"{name}.mp4").symlink_to(sample.default_mirror() / f"{video}.mp4")
            urls.append(f"{name} {url}\n")
            heights.append(f"{name}.mp4 {height}\n")
            times.append(f"{name}.mp4 {' '.join(spans)}\n")
            crops += [f"{name}_{k}.mp4 {box}\n" for k in range(len(spans))]
            clips -= len(spans)
        copy += 1
    for kind, lines in (("video_url", urls), ("resolution", heights), ("annotion_time", times),
                        ("crop_wh", crops), ("crop_ratio", [])):
        (lists / f"SAMPLE_{kind}.txt").write_text("".join(lines))
    return Workload(str(mirror), str(lists))


# ---------------------------------------------------------------- ours

def ours_pass(root: Path, tag: str, workers: int, workload: Workload) -> Run:
    """``run_build`` of ``workload`` into fresh folders; exit if a clip failed."""
    from pipelines.build.run import run_build

    cfg = workload.config(str(root / f"out-{tag}"), str(root / f"work-{tag}"), workers)
    started = time.perf_counter()
    result = run_build(cfg, Console(quiet=True))
    wall = time.perf_counter() - started
    if not all(s.ok for s in result.states):
        raise SystemExit(f"build {tag}: clips not ok: " + "; ".join(
            f"{s.record.clip_id} {s.status} in {s.failed_stage}: {s.error}" for s in result.states if not s.ok))
    clip_s = sum(float(s.info.duration_s) for s in result.states)
    return Run(f"ours-{workers}", clip_s, wall, dict(result.stage_seconds), dict(result.worker_peak_rss_mb),
               tuple(s["sha256"] for s in result.release["shards"]), dict(result.timings_s))


# ---------------------------------------------------------------- report

def ratio(runs: dict[str, list[Run]], num: str, den: str) -> tuple[float, list[float]]:
    """Median and per-repeat values of ``num`` / ``den`` clip-seconds per wall-second."""
    each = [a.throughput / b.throughput for a, b in zip(runs[num], runs[den])]
    return statistics.median(each), each


def overhead_s(run: Run, workers: int) -> float:
    """Process-phase seconds beyond the stage work: actor start-up and scheduling. With one
    worker, process wall minus the summed stage seconds; with more, minus that sum over the
    workers (an estimate: it assumes the clips kept every worker busy)."""
    return run.phases_s["process"] - sum(run.stage_s.values()) / workers


def report(runs: dict[str, list[Run]], ray_start_s: float, what: str, console: Console) -> None:
    """Print the throughput table, per-stage seconds, peak memory, fixed costs and the ratios."""
    table = Table(title=f"whole build of {what} (median of {len(runs['baseline'])} repeats)")
    for column in ("method", "clip-s", "wall s", "clip-s / wall-s", "x baseline"):
        table.add_column(column, justify="left" if column == "method" else "right")
    base = statistics.median(r.throughput for r in runs["baseline"])
    for method in METHODS:
        mine = runs[method]
        speed = statistics.median(r.throughput for r in mine)
        table.add_row(LABELS[method], f"{mine[0].clip_s:.1f}", f"{statistics.median(r.wall_s for r in mine):.2f}",
                      f"{speed:.3f}", f"{speed / base:.2f}")
    console.print(table)
    console.print(f"Ray start-up (once, before the clock, not in any number above): {ray_start_s:.1f} s")
    for method in METHODS[1:]:
        mine, workers = runs[method], int(method[-1])
        console.print(f"{method} fixed costs per build (median): process-phase overhead (actor start-up, "
                      f"scheduling; process s - stage s / {workers}) "
                      f"{statistics.median(overhead_s(r, workers) for r in mine):.2f} s, "
                      f"pack {statistics.median(r.phases_s['pack'] for r in mine):.2f} s")
    for method in METHODS:
        for i, run in enumerate(runs[method]):
            stages = ", ".join(f"{k} {v:.2f}" for k, v in run.stage_s.items())
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in sorted(run.peak_mb.items()))
            phases = "".join(f", {k} {v:.2f} s" for k, v in run.phases_s.items())
            console.print(f"  {method} #{i + 1}: {run.wall_s:.2f} s wall{phases}; seconds per stage (summed over "
                          f"clips): {stages} (sum {sum(run.stage_s.values()):.2f}); peak MiB: {peaks}")
    for num, den in (("ours-1", "baseline"), ("ours-2", "baseline"), ("ours-2", "ours-1")):
        median, each = ratio(runs, num, den)
        console.print(f"[bold]{num} / {den}:[/] {median:.2f}x (per repeat {', '.join(f'{x:.2f}x' for x in each)})")
    hashes = {r.shard_sha256 for m in ("ours-1", "ours-2") for r in runs[m]}
    console.print(f"our builds wrote {'byte-identical' if len(hashes) == 1 else 'DIFFERENT'} shards "
                  f"({len(runs['ours-1']) + len(runs['ours-2'])} builds)")


def main() -> None:
    """Start Ray once, warm up, then time the three methods ``--repeats`` times each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per method (default 2)")
    parser.add_argument("--clips", type=int, default=0,
                        help="build N clips made from the sample's videos instead of the sample (default: the sample)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.clips < 0:
        parser.error("--clips must be 0 (the sample) or more")
    console = Console() if Console().is_terminal else Console(width=160)
    from pipelines.build.run import load_records
    from pipelines.runtime import init_ray

    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp_name, \
            ProcessPoolExecutor(1, mp_context=get_context("spawn")) as child:
        root = Path(tmp_name)
        workload = (write_workload(root / "workload", args.clips) if args.clips
                    else Workload(str(sample.default_mirror())))
        records, _ = load_records(workload.config("unused", "unused").resolved())
        what = f"{len(records)} clips from the sample's videos" if args.clips else "the sample"
        console.print(f"1-minute load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
                      f"{what}: {len(records)} clips")
        started = time.perf_counter()
        init_ray(None)
        ray_start_s = time.perf_counter() - started
        runs: dict[str, list[Run]] = {m: [] for m in METHODS}
        child.submit(baseline_pass, records[:1], workload.mirror, str(DEFAULT_MODEL)).result()  # warm-up
        ours_pass(root, "warm-up", 2, workload)
        for repeat in range(args.repeats):
            for method in (METHODS if repeat % 2 == 0 else METHODS[::-1]):
                if method == "baseline":
                    run = child.submit(baseline_pass, records, workload.mirror, str(DEFAULT_MODEL)).result()
                else:
                    run = ours_pass(root, f"{method}-{repeat}", int(method[-1]), workload)
                runs[method].append(run)
                console.print(f"{method} repeat {repeat + 1}: {run.wall_s:.2f} s, {run.throughput:.3f} clip-s/s")
    report(runs, ray_start_s, what, console)
    console.print(f"1-minute load average at the end: {os.getloadavg()[0]:.1f}; whole run "
                  f"{time.perf_counter() - started:.0f} s. Shared machine: read the ratios, not the rates.")


if __name__ == "__main__":
    main()
