"""``aniportrait-data build``: metadata -> Ray Data stages -> deterministic shards.

Phase 1 (process, streaming on Ray Data): one row per source video is fetched (mirror
or yt-dlp), split into one row per clip, and each clip stage runs in an actor pool,
writing files and a done marker into the work area. Rows carry paths and small facts,
never decoded frames. Phase 2 (pack): finished clips, sorted by id, become shards, then
the manifest, then ``release.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import ray
from rich.console import Console

import datasets_spec
from aniportrait.audio import ModelLoadError
from aniportrait.face import DEFAULT_MODEL
from aniportrait.landmarks import LandmarkerSettings
from aniportrait.schema import ClipRecord, ClipState
from aniportrait.storage import OutputDir
from pipelines.config import BuildConfig
from pipelines.pack import (
    RELEASE_NAME,
    WriteShard,
    plan_rows,
    plan_shards,
    remove_stale_shards,
    write_manifest,
    write_release,
)
from pipelines.progress import failure_table, make_progress, summary_table
from pipelines.stages import AudioFeatures, ClipStage, CutClip, ExtractFace, FetchSource, RenderPose
from pipelines.stages.audio import model_revision
from pipelines.stages.chain import StageChain, chain_specs
from pipelines.versions import tool_versions

log = logging.getLogger(__name__)

RELEASE_FORMAT = "aniportrait-data/release/1"
MAX_BLOCKS = 20_000
#: Clips per batch for GPU stages (the wav2vec2 encoder batches them by length).
GPU_BATCH_CLIPS = 16


class SetupError(RuntimeError):
    """The build cannot start (bad option, missing tool or metadata): nothing was processed."""


@dataclass
class BuildResult:
    """What a build produced; ``exit_code`` follows the CLI's documented codes."""

    states: list[ClipState]
    shards: list[dict[str, Any]]
    release: dict[str, Any]
    resumed: int = 0
    stage_names: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(not s.ok for s in self.states)


def load_records(cfg: BuildConfig) -> list[ClipRecord]:
    """The dataset's clip records (sorted by clip id), cut to ``--limit``."""
    spec = datasets_spec.DATASETS.get(cfg.dataset)
    if spec is None:
        raise SetupError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(sorted(datasets_spec.DATASETS))}")
    try:
        records = spec.prepare(cfg.metadata, split=cfg.split)
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read the {cfg.dataset} metadata: {exc}") from exc
    records = sorted(records, key=lambda r: r.clip_id)
    return records[: cfg.limit] if cfg.limit else records


def clip_stages(cfg: BuildConfig) -> list[ClipStage]:
    """The per-clip stages in order, each chained to the hash of the one before."""
    model = Path(cfg.face_model) if cfg.face_model else DEFAULT_MODEL
    if not model.is_file():
        raise SetupError(f"face landmarker model not found at {model} (--face-model)")
    landmarker = LandmarkerSettings(model_path=str(model), mode=cfg.landmarker_mode)
    chain: list[tuple[type[ClipStage], dict[str, Any]]] = [
        (CutClip, {"cut": cfg.cut}),
        (ExtractFace, {"landmarker": landmarker, "min_face_rate": cfg.min_face_rate}),
        (RenderPose, {}),
    ]
    if cfg.wav2vec2:
        try:
            revision = model_revision(cfg.wav2vec2)
        except ModelLoadError as exc:
            raise SetupError(str(exc)) from exc
        chain.append((AudioFeatures, {"model": cfg.wav2vec2, "revision": revision}))
    stages: list[ClipStage] = []
    upstream = ""
    for cls, kwargs in chain:
        stage = cls(cfg.work_dir, upstream_hash=upstream, **kwargs)
        stages.append(stage)
        upstream = stage.stage_hash
    return stages


def init_ray(address: str | None) -> None:
    """Connect to ``address`` or start a local Ray; quiet Ray Data's own progress bars."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, configure_logging=True,
                 logging_level=logging.WARNING, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def run_build(cfg: BuildConfig, console: Console | None = None) -> BuildResult:
    """Run the whole build described by ``cfg``; see the module docstring."""
    console = console or Console(stderr=True)
    cfg = cfg.resolved()
    records = load_records(cfg)
    if not records:
        raise SetupError(f"the {cfg.dataset} metadata lists no clips")
    out = OutputDir.from_uri(cfg.out)
    out.makedirs()
    out.remove_stale_temporaries()
    stages = clip_stages(cfg)
    stage_names = ["download"] + [s.name for s in stages]
    states, pending = _resume(stages[-1], records, stage_names)
    console.print(f"[bold]{cfg.dataset}[/]: {len(records)} clips, {len(states)} already done, "
                  f"{len(pending)} to process")
    init_ray(cfg.address)
    workers = cfg.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    timings: dict[str, float] = {}
    with make_progress(console) as progress:
        started = time.perf_counter()
        if pending:
            states += _process(cfg, stages, pending, workers, progress)
        timings["process"] = time.perf_counter() - started
        started = time.perf_counter()
        shards = _pack(cfg, out, states, workers, progress)
        states.sort(key=lambda s: s.record.clip_id)
        release = _release(cfg, out, states, shards, stages)
        timings["pack"] = time.perf_counter() - started
    result = BuildResult(states, shards, release, resumed=len(records) - len(pending), stage_names=stage_names,
                         timings_s=timings)
    console.print(summary_table(states, stage_names, len(shards)))
    failures = failure_table(states)
    if failures is not None:
        console.print(failures)
    return result


def _resume(last: ClipStage, records: list[ClipRecord], stage_names: list[str]
            ) -> tuple[list[ClipState], list[ClipState]]:
    """Split clips into those whose last stage already finished and those still to run."""
    done, pending = [], []
    for record in records:
        state = ClipState(record)
        cached = last.cached_state(state)
        if cached is None:
            pending.append(state)
        else:
            cached.cached_stages = list(stage_names)
            done.append(cached)
    return done, pending


def _process(cfg: BuildConfig, stages: list[ClipStage], pending: list[ClipState], workers: int,
             progress: Any) -> list[ClipState]:
    # Small blocks (one clip each up to MAX_BLOCKS) so every worker gets clips at once.
    rows = [state.to_row() for state in pending]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
    ds = ds.map(FetchSource, fn_constructor_kwargs={"work_dir": cfg.work_dir, "mirror": cfg.mirror,
                                                    "retries": cfg.download_retries},
                compute=ray.data.ActorPoolStrategy(size=min(cfg.download_workers, len(rows))), num_cpus=0)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    # With GPUs in the cluster, the chain splits at its first GPU stage: CPU actors run
    # the stages before it, GPU actors the rest.
    split = next((i for i, s in enumerate(stages) if s.uses_gpu), len(stages)) if gpus else len(stages)
    on_cpu, on_gpu = stages[:split], stages[split:]
    ds = ds.map_batches(StageChain, fn_constructor_kwargs={"specs": chain_specs(on_cpu)}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=min(workers, len(pending))), num_cpus=1)
    if on_gpu:
        ds = ds.map_batches(StageChain, fn_constructor_kwargs={"specs": chain_specs(on_gpu)},
                            batch_size=GPU_BATCH_CLIPS, num_cpus=0, num_gpus=1,
                            compute=ray.data.ActorPoolStrategy(size=min(gpus, len(pending))))
    task = progress.add_task("clips", total=len(pending), note="")
    finished: list[ClipState] = []
    for row in ds.iter_rows():
        state = ClipState.from_row(row)
        finished.append(state)
        failed = sum(not s.ok for s in finished)
        progress.update(task, advance=1, note=f"{failed} failed" if failed else "")
    return finished


def _pack(cfg: BuildConfig, out: OutputDir, states: list[ClipState], workers: int, progress: Any) -> list[dict[str, Any]]:
    plans = plan_shards(states, cfg.dataset, cfg.split, cfg.shard_samples)
    task = progress.add_task("shards", total=len(plans), note="")
    shards: list[dict[str, Any]] = []
    if plans:
        rows = plan_rows(plans)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(WriteShard, fn_constructor_kwargs={"out_uri": cfg.out, "work_dir": cfg.work_dir},
                    compute=ray.data.ActorPoolStrategy(size=min(len(rows), workers)), num_cpus=0.5)
        for row in ds.iter_rows():
            shards.append(dict(row))
            progress.update(task, advance=1)
    shards.sort(key=lambda s: s["name"])
    remove_stale_shards(out, cfg.dataset, cfg.split, {s["name"] for s in shards})
    return shards


def _release(cfg: BuildConfig, out: OutputDir, states: list[ClipState], shards: list[dict[str, Any]],
             stages: list[ClipStage]) -> dict:
    shard_of = {}
    for plan in plan_shards(states, cfg.dataset, cfg.split, cfg.shard_samples):
        shard_of.update({s.record.clip_id: plan.name for s in plan.states})
    manifest = write_manifest(out, states, shard_of)
    failed = [s for s in states if not s.ok]
    release = {
        "format": RELEASE_FORMAT,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "config": cfg.content_config(),
        "config_hash": cfg.content_hash(),
        "counts": {"clips": len(states), "ok": len(states) - len(failed), "failed": len(failed),
                   "frames": sum(int(s.info.get("frames") or 0) for s in states if s.ok)},
        "shards": shards,
        "manifest": manifest,
        "tools": tool_versions(),
        "models": {s.name: s.model_info() for s in stages if s.model_info()},
    }
    write_release(out, release)
    log.info("wrote %s", out.path(RELEASE_NAME))
    return release
