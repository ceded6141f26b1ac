"""Batch inference on Ray Data: a job table -> one mp4 per job, with its audio.

Each job runs two steps. **prepare** (CPU): read the portrait, resize it to the output
size and find its face (MediaPipe); load the 16 kHz audio (audio jobs, plus the head
pose of an optional ``pose_video``) or retarget the source video's motion onto the
portrait (reenactment, :mod:`pipelines.inference.reenact`). **animate**: Audio2Lmk
(audio jobs) -> lip-coloured pose images -> Lmk2Video (16-frame context windows,
overlap 4) -> H.264 mp4 at 30 fps with the audio muxed in, written atomically, then a
done marker. Rows carry the job and a pickled payload between the steps, never models.

Without GPUs both steps run in one CPU actor pool (``--workers`` actors): separate
pools would let one step's idle actors hold the CPUs the other waits for, which
deadlocks small machines (see :mod:`pipelines.build.stages.chain`). With GPUs, prepare runs
in the CPU pool and animate in a GPU pool of ``--gpus`` actors (one GPU each, no CPU
reserved), each loading the models once.

A job that fails (unreadable image, no face, bad audio) becomes a report row with its
step and reason; the others go on. A job whose video and done marker exist (same
inputs and settings) is skipped on a rerun.

The conventions of the weights (:mod:`pipelines.inference.conventions`) apply unless
overridden: the pose feed (``--pose-feed``) and the head-pose post-processing
(``--pose-scale``, ``--pose-smooth``). Each audio job's Audio2Pose identity is its
``pose_id`` column, else ``--pose-id``, else drawn from its seed (reported as ``pose_id``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from aniportrait.media.probe import probe
from aniportrait.retarget import FPS, PortraitFace
from aniportrait.storage import write_local_atomic
from pipelines.inference.audio2lmk import portrait_face, pose_images
from pipelines.inference.conventions import check_pose_feed
from pipelines.inference.jobs import KIND_AUDIO, Job
from pipelines.inference.outputs import marker_path, output_path, read_marker, write_video
from pipelines.inference.reenact import reenact, reference_pose
from pipelines.inference.report import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, report_row, write_report
from pipelines.runtime import describe_error

TINY_WARNING = ("TINY RANDOM MODELS (--tiny-random): the videos are noise from untrained models, "
                "made to test the pipeline, not real animations")


class InferSetupError(RuntimeError):
    """Inference cannot start: bad option, missing weights, models that cannot load (exit 2)."""


@dataclass(frozen=True)
class InferSettings:
    """What every job shares: output format, sampling and the models to load."""

    size: int = 512
    steps: int = 25
    guidance: float = 3.5
    seed: int = 42
    context_frames: int = 16
    context_overlap: int = 4
    mesh_ckpt: str | None = None
    pose_ckpt: str | None = None
    wav2vec2: str | None = None
    lmk2video_weights: str | None = None
    tiny_random: bool = False
    face_model: str | None = None
    crf: int = 18
    #: None: the conventions recorded with the weights (:mod:`pipelines.inference.conventions`)
    pose_feed: str | None = None
    pose_scale: float | None = None
    pose_smooth: int | None = None
    #: None: each job's ``pose_id`` column, else drawn from the job's seed
    pose_id: int | None = None

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise InferSetupError(f"--size must be a multiple of 8, got {self.size}")
        if self.pose_feed is not None:
            try:
                check_pose_feed(self.pose_feed)
            except ValueError as exc:
                raise InferSetupError(f"--pose-feed: {exc}") from None
        if self.pose_smooth is not None and self.pose_smooth < 1:
            raise InferSetupError(f"--pose-smooth must be at least 1 frame, got {self.pose_smooth}")
        if self.pose_id is not None and self.pose_id < 0:
            raise InferSetupError(f"--pose-id must be >= 0, got {self.pose_id}")
        if self.steps < 1:
            raise InferSetupError(f"--steps must be at least 1, got {self.steps}")
        if not 0 <= self.context_overlap < self.context_frames:
            raise InferSetupError("context overlap must be smaller than the context window")
        if self.tiny_random:
            return
        missing = [flag for flag, value in (("--mesh-ckpt", self.mesh_ckpt), ("--pose-ckpt", self.pose_ckpt),
                                            ("--lmk2video-weights", self.lmk2video_weights)) if not value]
        if missing:
            raise InferSetupError(f"give {', '.join(missing)} (the trained weights), or --tiny-random to test "
                                  "the pipeline with untrained tiny models")
        for flag, value in (("--mesh-ckpt", self.mesh_ckpt), ("--pose-ckpt", self.pose_ckpt),
                            ("--lmk2video-weights", self.lmk2video_weights)):
            if not Path(value).exists():  # type: ignore[arg-type]
                raise InferSetupError(f"{flag} {value} not found")

    @property
    def models(self) -> str:
        """What the models are, for the report and the done markers."""
        if self.tiny_random:
            return "tiny-random"
        return f"mesh={self.mesh_ckpt} pose={self.pose_ckpt} lmk2video={self.lmk2video_weights}"

    @cached_property
    def weights_state(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime) of every weight file: retrained weights at the same path redo the jobs."""
        files: list[Path] = []
        for value in (self.mesh_ckpt, self.pose_ckpt, self.wav2vec2, self.lmk2video_weights, self.face_model):
            path = Path(value) if value else None
            if path is not None and path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file())
            elif path is not None and path.is_file():
                files.append(path)
        return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]

    def fingerprint(self, job: Job) -> str:
        """Hash of everything that shapes ``job``'s video (a done marker must match it)."""
        facts = {**asdict(self), "job": asdict(job), "weights": self.weights_state,
                 "steps": job.steps or self.steps, "seed": self.seed if job.seed is None else job.seed}
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Step 1: prepare (CPU)


@dataclass
class Prepared:
    """What animate needs of a job: portrait image and face, and audio or retargeted motion."""

    image: np.ndarray                  # (size, size, 3) uint8 RGB
    face: PortraitFace                 # of ``image``
    frames: int                        # output frames at 30 fps
    wave: np.ndarray | None = None     # 16 kHz mono float32 (audio jobs)
    pose: np.ndarray | None = None     # (frames, 6) head pose from a pose video (audio jobs)
    lmks2d: np.ndarray | None = None   # (frames, 468, 2) pixels (reenactment)
    audio: str | None = None           # file whose first audio stream is muxed in
    audio_seconds: float | None = None  # cut the muxed audio to this length


def read_portrait(path: str, size: int) -> np.ndarray:
    """The portrait as (size, size, 3) uint8 RGB, resized as the official scripts do (stretched)."""
    import cv2

    if not Path(path).is_file():
        raise FileNotFoundError(f"portrait {path} not found")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read the portrait {Path(path).name}: not an image OpenCV can decode")
    return cv2.cvtColor(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


class PrepareJob:
    """Portrait face + audio (or reenactment motion) of one job; MediaPipe loads lazily."""

    name = "prepare"

    def __init__(self, settings: InferSettings) -> None:
        self.settings = settings

    def _landmarker(self):  # -> FaceLandmarkerRunner (video mode: tracking over a clip)
        from aniportrait.face import DEFAULT_MODEL
        from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings

        return FaceLandmarkerRunner(LandmarkerSettings(model_path=self.settings.face_model or str(DEFAULT_MODEL)))

    def __call__(self, job: Job, _: Any) -> Prepared:
        from aniportrait.audio import frame_count, load_audio

        image = read_portrait(job.portrait, self.settings.size)
        face = portrait_face(image, self.settings.face_model)
        if job.kind == KIND_AUDIO:
            _need_file(job.audio, "audio")
            wave = load_audio(job.audio)  # type: ignore[arg-type]
            if len(wave) == 0:
                raise ValueError(f"the audio {Path(job.audio).name} is empty")  # type: ignore[arg-type]
            frames = frame_count(len(wave), FPS)
            pose = None
            if job.pose_video:
                _need_file(job.pose_video, "pose video")
                pose = reference_pose(job.pose_video, self._landmarker(), frames, FPS)
            return Prepared(image, face, frames, wave=wave, pose=pose, audio=job.audio)
        _need_file(job.source_video, "source video")
        motion = reenact(job.source_video, face, self._landmarker(), FPS)  # type: ignore[arg-type]
        frames = len(motion.lmks2d)
        audio = job.source_video if probe(job.source_video).has_audio else None  # type: ignore[arg-type]
        return Prepared(image, face, frames, lmks2d=motion.lmks2d, audio=audio, audio_seconds=frames / FPS)


def _need_file(path: str | None, what: str) -> None:
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"{what} {path} not found")


# ---------------------------------------------------------------------------------------
# Step 2: animate (GPU when there is one)


class AnimateJob:
    """Audio2Lmk -> pose images -> Lmk2Video -> mp4 for one prepared job; models load once."""

    name = "animate"

    def __init__(self, settings: InferSettings, out: str, device: str = "cpu") -> None:
        self.settings = settings
        self.out = out
        self.device = device

    @cached_property
    def models(self) -> tuple[Any, Any]:
        """(Audio2Lmk, Lmk2Video), loaded on the first job (a run with nothing to animate loads none)."""
        try:
            return load_models(self.settings, self.device)
        except Exception as exc:
            raise InferSetupError(f"cannot load the models ({self.settings.models}): {describe_error(exc)}") from exc

    def __call__(self, job: Job, prepared: Prepared) -> dict[str, Any]:
        started = time.perf_counter()
        audio2lmk, lmk2video = self.models
        timings = {"load_s": time.perf_counter() - started}  # 0 but on an actor's first job
        started = time.perf_counter()
        seed = self.settings.seed if job.seed is None else job.seed
        lmks2d, pose_id = prepared.lmks2d, None
        if lmks2d is None:
            if prepared.pose is None:  # Audio2Pose makes the head motion: its identity
                pose_id = self.pose_id(job, seed, audio2lmk)
            lmks2d = audio2lmk.motion(prepared.wave, prepared.face, fps=FPS, pose=prepared.pose,
                                      pose_id=pose_id or 0).lmks2d
        size = self.settings.size
        poses = pose_images(lmks2d, size, size)
        timings["motion_s"] = time.perf_counter() - started
        started = time.perf_counter()
        video = lmk2video.generate(
            prepared.image, poses, steps=job.steps or self.settings.steps, guidance=self.settings.guidance,
            context_frames=self.settings.context_frames, context_overlap=self.settings.context_overlap,
            seed=seed, progress=False)
        timings["video_s"] = time.perf_counter() - started
        if len(video) != prepared.frames:
            raise RuntimeError(f"Lmk2Video returned {len(video)} frames for {prepared.frames} pose images")
        started = time.perf_counter()
        output = output_path(self.out, job)
        write_video(video, FPS, output, audio=prepared.audio, audio_seconds=prepared.audio_seconds,
                    crf=self.settings.crf)
        timings["encode_s"] = time.perf_counter() - started
        return {"frames": int(len(video)), "output": output, "pose_id": pose_id, **timings}

    def pose_id(self, job: Job, seed: int, audio2lmk: Any) -> int:
        """The job's Audio2Pose identity: its ``pose_id`` column, else ``--pose-id``, else drawn from ``seed``."""
        for given in (job.pose_id, self.settings.pose_id):
            if given is not None:
                return given
        return audio2lmk.drawn_pose_id(seed)


def load_models(settings: InferSettings, device: str) -> tuple[Any, Any]:
    """Audio2Lmk and Lmk2Video on ``device``: trained weights, or tiny random ones."""
    from pipelines.inference.audio2lmk import Audio2Lmk
    from pipelines.inference.lmk2video import Lmk2Video

    post = {"pose_scale": settings.pose_scale, "pose_smooth": settings.pose_smooth}
    if settings.tiny_random:
        audio2lmk = Audio2Lmk.random_tiny(seed=0, wav2vec2_dir=settings.wav2vec2, **post)
        feed = {"pose_feed": settings.pose_feed} if settings.pose_feed else {}
        return audio2lmk, Lmk2Video.random_tiny(seed=0, device=device, **feed)
    audio2lmk = Audio2Lmk.from_checkpoints(settings.mesh_ckpt, settings.pose_ckpt,  # type: ignore[arg-type]
                                           wav2vec2=settings.wav2vec2, device=device, **post)
    lmk2video = Lmk2Video.from_pretrained(settings.lmk2video_weights, device=device,  # type: ignore[arg-type]
                                          pose_feed=settings.pose_feed, **_half_on_gpu(device))
    return audio2lmk, lmk2video


def _half_on_gpu(device: str) -> dict[str, Any]:
    if device == "cpu":
        return {}
    import torch

    return {"dtype": torch.float16}


# ---------------------------------------------------------------------------------------
# Ray Data


class JobChain:
    """Ray Data callable: runs the given steps, in order, on each job of a batch.

    Columns: ``job`` (JSON), ``payload`` (the pickled result of the last step that ran),
    ``result`` (JSON: status, error, ``step_seconds``, and the animate step's facts). A
    failing step fails only its job, with ``"<step>: <reason>"``; later steps skip it. An
    :class:`InferSetupError` (models that do not load) is no job's fault: it stops the run.
    """

    def __init__(self, steps: list[tuple[type, dict[str, Any]]]) -> None:
        self.steps = [cls(**kwargs) for cls, kwargs in steps]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"job": [], "payload": [], "result": []}
        for job_text, payload, result_text in zip(batch["job"], batch["payload"], batch["result"]):
            job, result = Job.from_json(str(job_text)), json.loads(str(result_text))
            value = pickle.loads(payload) if payload else None
            for step in self.steps:
                if result["status"] == STATUS_FAILED:
                    break
                started = time.perf_counter()
                try:
                    value = step(job, value)
                except InferSetupError:
                    raise
                except Exception as exc:  # one job's failure, recorded with its reason
                    result.update(status=STATUS_FAILED, error=f"{step.name}: {describe_error(exc)}")
                    value = None
                result["step_seconds"][step.name] = time.perf_counter() - started
            if isinstance(value, dict):  # the animate step's facts
                result.update(value, status=STATUS_OK)
                value = None
            out["job"].append(str(job_text))
            out["payload"].append(pickle.dumps(value) if value is not None else b"")
            out["result"].append(json.dumps(result))
        return out


@dataclass
class InferResult:
    """One report row per job (table order) and the run's wall time."""

    rows: list[dict[str, Any]]
    wall_s: float = 0.0
    models: str = ""

    @property
    def failed(self) -> int:
        return sum(row["status"] == STATUS_FAILED for row in self.rows)

    @property
    def exit_code(self) -> int:
        """0 every job has its video, 3 some failed."""
        return 3 if self.failed else 0


def run_infer(jobs: list[Job], out: str, settings: InferSettings, *, address: str | None = None,
              workers: int | None = None, gpus: int | None = None, console: Console | None = None) -> InferResult:
    """Run every job not already done into ``out``; write ``jobs_report.parquet`` there.

    ``gpus``: GPU actors (default every GPU of the cluster, 0 runs on CPU); ``workers``:
    CPU actors (default every CPU).
    """
    import ray

    from pipelines.runtime import init_ray
    from pipelines.build.progress import make_progress

    started = time.perf_counter()
    Path(out).mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    pending: list[Job] = []
    for job in jobs:
        marker = read_marker(out, job)
        if marker is not None and marker.get("fingerprint") == settings.fingerprint(job):
            done[job.name] = report_row(job, {**marker, "status": STATUS_SKIPPED})
        else:
            pending.append(job)
    results: dict[str, dict[str, Any]] = {}
    if pending:
        init_ray(address)
        available = int(ray.cluster_resources().get("GPU", 0))
        if gpus is not None and gpus > available:
            raise InferSetupError(f"--gpus {gpus}: the Ray cluster has {available} GPU(s)")
        gpus = available if gpus is None else gpus
        cpus = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        with make_progress(console or Console(stderr=True)) as progress:
            task = progress.add_task("jobs", total=len(pending), note=f"{len(done)} already done")
            for row in _execute(pending, out, settings, cpus, gpus).iter_rows():
                job, result = Job.from_json(row["job"]), json.loads(row["result"])
                if result["status"] == STATUS_OK:
                    result = _finish(out, job, settings, result)
                results[job.name] = report_row(job, result)
                failed = sum(r["status"] == STATUS_FAILED for r in results.values())
                progress.update(task, advance=1, note=f"{failed} failed" if failed else "")
    rows = [done.get(job.name) or results[job.name] for job in jobs]
    write_report(out, rows)
    return InferResult(rows, wall_s=time.perf_counter() - started, models=settings.models)


def _execute(pending: list[Job], out: str, settings: InferSettings, cpus: int, gpus: int):  # -> ray.data.Dataset
    import ray

    # Longest first (the driving file's size stands for its length): fewer idle actors at the end.
    rows = [{"job": job.to_json(), "payload": b"",
             "result": json.dumps({"status": "pending", "error": "", "step_seconds": {}})}
            for job in sorted(pending, key=_driver_bytes, reverse=True)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    prepare = (PrepareJob, {"settings": settings})
    if gpus == 0:
        animate = (AnimateJob, {"settings": settings, "out": out, "device": "cpu"})
        return ds.map_batches(JobChain, fn_constructor_kwargs={"steps": [prepare, animate]}, batch_size=1,
                              compute=ray.data.ActorPoolStrategy(size=min(cpus, len(rows))), num_cpus=1)
    animate = (AnimateJob, {"settings": settings, "out": out, "device": "cuda"})
    ds = ds.map_batches(JobChain, fn_constructor_kwargs={"steps": [prepare]}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=min(cpus, len(rows))), num_cpus=1)
    return ds.map_batches(JobChain, fn_constructor_kwargs={"steps": [animate]}, batch_size=1,
                          compute=ray.data.ActorPoolStrategy(size=min(gpus, len(rows))), num_cpus=0, num_gpus=1)


def _driver_bytes(job: Job) -> int:
    """Size of the job's audio or source video (0 when missing: it fails at once)."""
    try:
        return os.stat(job.audio or job.source_video or "").st_size
    except OSError:
        return 0


def _finish(out: str, job: Job, settings: InferSettings, result: dict[str, Any]) -> dict[str, Any]:
    """Add the throughput to a finished job's result and write its done marker (last).

    ``seconds`` is the job's own work: both steps, without loading the models.
    """
    seconds = sum(result["step_seconds"].values()) - result["load_s"]
    result.update(fps=FPS, seconds=seconds, frames_per_s=result["frames"] / seconds if seconds else 0.0,
                  fingerprint=settings.fingerprint(job), models=settings.models, job=json.loads(job.to_json()))
    write_local_atomic(marker_path(out, job), json.dumps(result, indent=1, sort_keys=True).encode())
    return result
