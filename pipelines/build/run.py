"""``aniportrait-data build``: metadata -> Ray Data stages -> deterministic shards.

Phase 1 (process, streaming on Ray Data): one row per clip, longest first. A clip whose
source the driver finds (in the mirror, or a ``folder`` video read in place) goes straight
to the clip workers; the others first pass a pool of download workers (yt-dlp, once per
source). The clip stages run in one actor pool, writing files and a done marker into the
work area. Rows carry paths and small facts, never decoded frames. Phase 2 (pack):
finished clips, sorted by id, become shards, then the manifest, then ``release.json``.
Shards are planned per release generation and only those whose content changed are
written (see ``pipelines.build.pack`` and ``pipelines.build.release``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import ray
from rich.console import Console

import datasets_spec
from aniportrait.audio import ModelLoadError
from aniportrait.face import DEFAULT_MODEL
from aniportrait.format import RELEASE_NAME
from aniportrait.landmarks import LandmarkerSettings
from aniportrait.schema import METADATA_STAGE, STATUS_FAILED, STATUS_SPLIT, STATUSES, ClipRecord, ClipState
from aniportrait.scores import SCORES, ScoreRegistry
from aniportrait.storage import OutputDir
from datasets_spec.errors import MetadataError
from pipelines.build.config import BuildConfig
from pipelines.build.pack import (
    ShardPlan,
    plan_rows,
    plan_shards,
    remove_stale_shards,
    write_manifest,
    write_release,
)
from pipelines.build.progress import failure_table, make_progress, summary_table
from pipelines.build.release import PreviousRelease, assign_generations, describe_changes, next_version, read_previous
from pipelines.build.segment import segment_sources
from pipelines.runtime import by_value, init_ray
from pipelines.build.stages.audio import AudioFeatures, model_revision
from pipelines.build.stages.base import ClipStage
from pipelines.build.stages.chain import HALT_COLUMN, METRICS_COLUMN, StageChain, StageMetrics, chain_specs
from pipelines.build.stages.cut import CutClip
from pipelines.build.stages.face import ExtractFace
from pipelines.build.stages.fetch import STAGE as DOWNLOAD_STAGE
from pipelines.build.stages.fetch import ORIGINS, BuildGate, FetchSource, SourcesAtHand
from pipelines.build.stages.quality import FilterClips, FixSync, ScoreQuality
from pipelines.build.stages.render import RenderPose
from pipelines.build.versions import tool_versions
from pipelines.build.workarea import WorkArea
from pipelines.build.writers import ShardWriters, writer_count

log = logging.getLogger(__name__)

RELEASE_FORMAT = "aniportrait-data/release/1"
MAX_BLOCKS = 20_000
#: Clips per batch for GPU stages (the wav2vec2 encoder batches them by length).
GPU_BATCH_CLIPS = 16
#: How long a build waits for its clip workers to start before giving up.
ACTOR_START_TIMEOUT_S = 600


class SetupError(RuntimeError):
    """The build cannot start (bad option, missing tool or metadata) or cannot go on (full
    disk): the CLI exits 2; clips finished before a stop are kept and a rerun resumes."""


@dataclass
class BuildResult:
    """What a build produced; ``exit_code`` follows the CLI's documented codes."""

    states: list[ClipState]
    shards: list[dict[str, Any]]
    release: dict[str, Any]
    resumed: int = 0
    stage_names: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Wall seconds per clip stage, summed over the clips processed in this run.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Peak resident memory (MiB) of each stage-chain worker (``host:pid``).
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: Sources of the clips processed in this run, by where they came from (``mirror``,
    #: ``work``: downloaded by an earlier run, ``network``).
    sources: dict[str, int] = field(default_factory=dict)
    #: The download gate's stats (``aniportrait.media.throttle.DownloadGate.stats``); empty
    #: with ``--no-download``.
    downloads: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Clips that failed (filtered and split clips are results, not failures)."""
        return sum(s.status == STATUS_FAILED for s in self.states)


def load_records(cfg: BuildConfig) -> tuple[list[ClipRecord], list[ClipState]]:
    """The dataset's readable clip records, and a failed state for every metadata entry that
    could not be read (``--strict-metadata``: the first such entry stops the build), both
    sorted by clip id and cut together to the first ``--limit`` entries (for a dataset of
    whole videos, the segmentation cuts its clips instead)."""
    try:
        spec = datasets_spec.get(cfg.dataset)
    except datasets_spec.UnknownDatasetError as exc:
        raise SetupError(str(exc)) from exc
    errors: list[MetadataError] | None = None if cfg.strict_metadata else []
    try:
        records = spec.prepare(cfg.metadata, split=cfg.split, errors=errors)
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read the {cfg.dataset} metadata: {exc}") from exc
    entries: list[ClipRecord | ClipState] = [*records, *(_unreadable_entry(cfg, e) for e in errors or ())]
    entries.sort(key=lambda e: e.clip_id if isinstance(e, ClipRecord) else e.record.clip_id)
    if cfg.limit and not spec.automatic_clips:
        entries = entries[: cfg.limit]
    return ([e for e in entries if isinstance(e, ClipRecord)],
            [e for e in entries if isinstance(e, ClipState)])


def _unusable(cfg: BuildConfig, count: int) -> str:
    """What the failed rows known before processing are, in the summary line."""
    if datasets_spec.get(cfg.dataset).automatic_clips:
        return f"{count} videos gave no clips (unreadable, or no face stretch long enough)"
    return f"{count} metadata entries could not be read"


def _unreadable_entry(cfg: BuildConfig, error: MetadataError) -> ClipState:
    """The failed manifest row of a metadata entry that could not be read."""
    record = ClipRecord(dataset=cfg.dataset, clip_id=error.entry_id, source_id=error.source_id or error.entry_id,
                        source_url=None, mirror_names=(), split=cfg.split, provenance=error.provenance)
    state = ClipState(record)
    state.fail(METADATA_STAGE, error.manifest_error(), "bad_metadata")
    return state


def clip_stages(cfg: BuildConfig) -> list[ClipStage]:
    """The per-clip stages in order, each chained to the hash of the one before."""
    model = Path(cfg.face_model) if cfg.face_model else DEFAULT_MODEL
    if not model.is_file():
        raise SetupError(f"face landmarker model not found at {model} (--face-model)")
    landmarker = LandmarkerSettings(model_path=str(model), mode=cfg.landmarker_mode)
    scores = score_snapshot()
    chain: list[tuple[type[ClipStage], dict[str, Any]]] = [
        (CutClip, {"cut": cfg.cut, "min_frames": cfg.curation.min_frames}),
        (ExtractFace, {"landmarker": landmarker, "min_face_rate": cfg.min_face_rate,
                       "scene_threshold": cfg.curation.scene_threshold}),
        (RenderPose, {}),
        (ScoreQuality, {"scores": scores}),
        (FilterClips, {"curation": cfg.curation, "scores": scores}),
    ]
    if cfg.curation.fix_sync:
        chain.append((FixSync, {}))
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


def score_snapshot() -> ScoreRegistry:
    """The registered scores as the quality and filter stages carry them to their Ray workers:
    a copy (a later registration leaves the build alone) whose compute functions travel by
    value, so a score registered only in this process is computed in every worker."""
    return ScoreRegistry(dataclasses.replace(s, compute=by_value(s.compute)) if s.compute else s for s in SCORES)


def sub_clips(states: list[ClipState], fps: float) -> list[ClipRecord]:
    """The records of the shots that clips split at scene cuts were replaced by."""
    return [state.record.part(first, end, fps)
            for state in states if state.status == STATUS_SPLIT for first, end in state.info.parts]


def run_build(cfg: BuildConfig, console: Console | None = None) -> BuildResult:
    """Run the whole build described by ``cfg``; see the module docstring."""
    console = console or Console(stderr=True)
    cfg = cfg.resolved()
    records, unreadable = load_records(cfg)
    local_files: dict[str, str] = {}
    if datasets_spec.get(cfg.dataset).automatic_clips:  # whole videos: cut them into clips first
        init_ray(cfg.address)
        try:
            records, no_clips, local_files = segment_sources(cfg, records)
        except ValueError as exc:
            raise SetupError(str(exc)) from exc
        unreadable += no_clips
    if not records and not unreadable:
        raise SetupError(f"the {cfg.dataset} metadata lists no clips")
    out = OutputDir.from_uri(cfg.out)
    out.makedirs()
    out.remove_stale_temporaries()
    stages = clip_stages(cfg)
    stage_names = ["download"] + [s.name for s in stages]
    previous = read_previous(out, cfg.dataset, cfg.split)
    if cfg.retry_failed and previous is not None:
        retry = previous.failed()
        console.print(f"retrying the {len(retry)} failed clips of release version {previous.version}")
        _forget_failures(stages, retry)
    states, pending = _resume(stages[-1], records, stage_names)
    console.print(f"[bold]{cfg.dataset}[/]: {len(records)} clips, {len(states)} already done, "
                  f"{len(pending)} to process" + (f"; {_unusable(cfg, len(unreadable))} (failed rows in the manifest)"
                                                  if unreadable else ""))
    states += unreadable
    init_ray(cfg.address)
    workers = cfg.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    timings: dict[str, float] = {}
    metrics = StageMetrics()
    downloads: dict[str, Any] = {}
    writers = ShardWriters(cfg.out, cfg.work_dir, writer_count(workers, len(states) + len(pending), cfg.shard_samples))
    with make_progress(console) as progress, writers:
        if pending:
            writers.start()  # their imports overlap the clips' processing
        started = time.perf_counter()
        gate = BuildGate(cfg.download_rate, cfg.max_bot_checks, enabled=not cfg.no_download)
        try:
            if pending:
                states += _process(cfg, stages, pending, local_files, workers, progress, metrics, gate)
            parts = sub_clips(states, cfg.cut.fps)
            if parts:
                done_parts, pending_parts = _resume(stages[-1], parts, stage_names)
                states += done_parts
                if pending_parts:
                    states += _process(cfg, stages, pending_parts, local_files, workers, progress, metrics, gate)
        finally:
            downloads = gate.close()
        timings["process"] = time.perf_counter() - started
        started = time.perf_counter()
        states.sort(key=lambda s: s.record.clip_id)
        packed = _pack(cfg, out, states, stages[-1].stage_hash, previous, progress, writers)
        release = _release(cfg, out, states, packed, stages, previous)
        shards = packed.entries
        timings["pack"] = time.perf_counter() - started
    result = BuildResult(states, shards, release, resumed=len(records) - len(pending), stage_names=stage_names,
                         timings_s=timings, stage_seconds=metrics.stage_seconds,
                         worker_peak_rss_mb=metrics.peak_rss_mb,
                         sources=dict(Counter(metrics.sources.values())), downloads=downloads)
    console.print(summary_table(states, stage_names, len(shards)))
    if metrics.stage_seconds:
        console.print(metrics.summary())
    if result.sources:
        console.print(_sources_summary(result.sources, downloads))
    failures = failure_table(states)
    if failures is not None:
        console.print(failures)
    return result


def _sources_summary(sources: dict[str, int], downloads: dict[str, Any]) -> str:
    """One line: where this run's sources came from, and the download gate's back-offs."""
    names = {"folder": "read where they are", "mirror": "from the mirror", "work": "downloaded earlier (work area)",
             "network": "downloaded now"}
    shown = [origin for origin in ORIGINS if origin != "folder" or sources.get(origin)]
    line = "sources: " + ", ".join(f"{sources.get(origin, 0)} {names[origin]}" for origin in shown)
    if downloads.get("bot_checks"):
        line += (f"; {downloads['bot_checks']} bot checks or HTTP 429 answers, downloads spaced up to "
                 f"{downloads['longest_interval_s']:.3g} s apart")
    return line


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


def _forget_failures(stages: list[ClipStage], failed: dict[str, str]) -> None:
    """Delete the cached failures of the ``failed`` clips (clip id -> source id) so they run
    again: their stage markers that record a failure and their source's failed-download
    marker. Markers of the stages a clip passed stay, so only what failed runs again."""
    work = stages[0].work
    for clip_id, source_id in sorted(failed.items()):
        for stage in stages:
            payload = work.read_marker(clip_id, stage.name, stage.stage_hash)
            if payload is not None and payload.get("status") == STATUS_FAILED:
                work.delete_marker(clip_id, stage.name)
        work.delete_marker(source_id, DOWNLOAD_STAGE, kind="sources")


def _process(cfg: BuildConfig, stages: list[ClipStage], pending: list[ClipState], local_files: dict[str, str],
             workers: int, progress: Any, metrics: StageMetrics, gate: BuildGate) -> list[ClipState]:
    """Run the clip stages over ``pending`` on Ray; add the chain's metrics to ``metrics``.

    Clips whose source the driver has at hand (a ``folder`` video in ``local_files``,
    source id -> path, or a file in ``cfg.mirror``) go straight to the clip workers; the
    others go through a pool of download workers first (and start the download ``gate``).
    Clips are handed out longest first, so the last clips to finish are short ones.

    A chain actor that dies (killed, out of memory, node lost) is restarted and its clip
    runs again: Ray Data's default for actor pools (``max_restarts=-1``,
    ``max_task_retries=-1``; ``tests/test_faults.py`` checks it); the clip's finished
    stages are restored from their markers. A full disk, or the download ``gate`` stopping
    the downloads, stops the build with :class:`SetupError`; finished clips stay.
    """
    rows = [state.to_row() for state in sorted(pending, key=_longest_first)]
    at_hand = SourcesAtHand(cfg.mirror, local_files)
    resolved = [at_hand.resolve(row) for row in rows]
    ready = [row for row in resolved if row is not None]
    to_fetch = [row for row, found in zip(rows, resolved) if found is None]
    inputs = [_blocks(ready)] if ready else []
    if to_fetch:
        inputs.append(_blocks(to_fetch).map(
            FetchSource, fn_constructor_kwargs={"work_dir": cfg.work_dir, "mirror": cfg.mirror,
                                                "retries": cfg.download_retries, "settings": cfg.download_settings(),
                                                "no_download": cfg.no_download, "gate": gate.name()},
            compute=ray.data.ActorPoolStrategy(size=min(cfg.download_workers, _sources(to_fetch))), num_cpus=0))
    ds = inputs[0].union(*inputs[1:]) if len(inputs) > 1 else inputs[0]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    # With GPUs in the cluster, the chain splits at its first GPU stage: CPU actors run
    # the stages before it, GPU actors the rest.
    split = next((i for i, s in enumerate(stages) if s.uses_gpu), len(stages)) if gpus else len(stages)
    on_cpu, on_gpu = stages[:split], stages[split:]
    size = min(workers, len(pending))
    # Start every clip worker before the first clip is handed out, when the cluster has the CPUs
    # for all of them (else start with those that fit); one clip in flight per worker. Otherwise
    # the first worker up queues clips that the others, still starting, would have taken.
    # The setting goes on this dataset's own DataContext (a copy taken when ``from_items`` made
    # it; the process-wide one would be ignored here and leak into later datasets).
    ds.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S if size <= ray.available_resources().get("CPU", 0) else -1
    ds = ds.map_batches(StageChain, fn_constructor_kwargs={"specs": chain_specs(on_cpu)}, batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1), num_cpus=1)
    if on_gpu:
        ds = ds.map_batches(StageChain, fn_constructor_kwargs={"specs": chain_specs(on_gpu)},
                            batch_size=GPU_BATCH_CLIPS, num_cpus=0, num_gpus=1,
                            compute=ray.data.ActorPoolStrategy(size=min(gpus, len(pending))))
    task = progress.add_task("clips", total=len(pending), note="")
    finished: list[ClipState] = []
    for row in ds.iter_rows():
        if row[HALT_COLUMN]:
            raise SetupError(f"{row[HALT_COLUMN]}. Finished clips are kept: run the same command again "
                             "to go on.")
        state = ClipState.from_row(row)
        finished.append(state)
        metrics.add(row[METRICS_COLUMN])
        failed = sum(s.status == STATUS_FAILED for s in finished)
        progress.update(task, advance=1, note=f"{failed} failed" if failed else "")
    return finished


def _longest_first(state: ClipState) -> tuple[float, str]:
    """Sort key: the longest clips first (ties by id)."""
    start, end = state.record.time_span()
    return (start - end, state.record.clip_id)


def _sources(rows: list[dict[str, Any]]) -> int:
    """How many source videos ``rows`` need: more download workers than that would only
    wait on a source's lock."""
    return len({ClipState.from_row(row).record.source_id for row in rows})


def _blocks(rows: list[dict[str, Any]]) -> ray.data.Dataset:
    """A dataset of ``rows`` in small blocks (one clip each, up to MAX_BLOCKS) so every worker
    gets clips at once."""
    return ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))


@dataclass
class Packed:
    """The pack phase's result: the plan and every planned shard's release entry."""

    generations: dict[str, int]
    plans: list[ShardPlan]
    entries: list[dict[str, Any]]
    written: list[str]
    unchanged: list[str]
    removed: list[str]


def _pack(cfg: BuildConfig, out: OutputDir, states: list[ClipState], chain_hash: str,
          previous: PreviousRelease | None, progress: Any, writers: ShardWriters) -> Packed:
    """Plan the shards; have ``writers`` write those whose fingerprint or file differs from
    the previous release's."""
    generations = assign_generations(states, previous)
    plans = plan_shards(states, cfg.dataset, cfg.split, generations, samples=cfg.shard_samples,
                        max_bytes=cfg.shard_bytes, work=WorkArea(cfg.work_dir), keep_rejected=cfg.keep_rejected)
    known = previous.shards() if previous else {}
    entries: list[dict[str, Any]] = []
    todo: dict[str, dict[str, Any]] = {}
    for plan in plans:
        fingerprint = plan.fingerprint(chain_hash)
        entry = known.get(plan.name)
        if entry and entry.get("fingerprint") == fingerprint and _has_size(out, entry):
            entries.append(entry)
        else:
            todo[plan.name] = {"generation": plan.generation, "fingerprint": fingerprint}
    unchanged = [e["name"] for e in entries]
    task = progress.add_task("shards", total=len(todo), note="")
    rows = plan_rows([p for p in plans if p.name in todo])
    for row in writers.write(rows):
        entries.append({**row, **todo[row["name"]]})
        progress.update(task, advance=1)
    entries.sort(key=lambda s: s["name"])
    names = {p.name for p in plans}
    remove_stale_shards(out, cfg.dataset, cfg.split, names)
    return Packed(generations, plans, entries, written=sorted(todo), unchanged=unchanged,
                  removed=sorted(set(known) - names))


def _has_size(out: OutputDir, entry: dict[str, Any]) -> bool:
    """Whether the shard file is there with the size the release recorded."""
    return out.fs.get_file_info(out.path(entry["name"])).size == entry.get("size")


def _release(cfg: BuildConfig, out: OutputDir, states: list[ClipState], packed: Packed, stages: list[ClipStage],
             previous: PreviousRelease | None) -> dict:
    shard_of = {s.record.clip_id: plan.name for plan in packed.plans for s in plan.states}
    manifest = write_manifest(out, states, shard_of, packed.generations)
    changes = describe_changes(previous, states, cfg.content_hash(), manifest["sha256"], packed.written,
                               packed.unchanged, packed.removed)
    version, changes = next_version(previous, changes)
    rejected = {p.name for p in packed.plans if p.rejected}
    statuses = Counter(s.status for s in states)
    release = {
        "format": RELEASE_FORMAT,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "version": version,
        "changes": changes,
        "config": cfg.content_config(),
        "config_hash": cfg.content_hash(),
        "counts": {"clips": len(states), **{status: statuses[status] for status in STATUSES},
                   "frames": sum(int(s.info.frames or 0) for s in states if s.ok)},
        "shards": [e for e in packed.entries if e["name"] not in rejected],
        "rejected_shards": [e for e in packed.entries if e["name"] in rejected],
        "manifest": manifest,
        "tools": tool_versions(),
        "models": {s.name: s.model_info() for s in stages if s.model_info()},
    }
    write_release(out, release)
    log.info("wrote %s", out.path(RELEASE_NAME))
    return release
