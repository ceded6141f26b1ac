"""Run several per-clip stages one after another inside one Ray actor.

Each Ray Data actor pool holds its CPUs for the whole run, so one pool per stage on a
small cluster deadlocks (the later pools' idle actors hold the CPUs the earlier stages
wait for). One pool running the chain per clip avoids that, moves no data between
actors and keeps a clip's work-area files on the node that made them (with a remote
work area, in the node's scratch copy until the chain is done with the clip). The stages stay
separate classes with their own caches and markers.

Next to each clip's ``state`` the chain returns a ``metrics`` column: the wall seconds
each stage spent on the clip (0 when restored from its marker) and the peak resident
memory of the actor process that ran it, and (from the download stage) where the clip's
source came from. Timings stay out of the state, so markers and manifests do not depend
on them. A full disk is no clip's failure: the chain stops the batch and says why in the
``halt`` column, and the driver stops the build (nothing of the interrupted stage is
cached, so a rerun with space redoes it). The download stage halts clips the same way
when its circuit breaker opened; the chain passes a halted clip through untouched.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aniportrait.schema import ClipState
from pipelines.runtime import describe_error, is_disk_full
from pipelines.build.stages.base import ClipStage

#: Ray Data column holding each clip's metrics (JSON, like ``state``).
METRICS_COLUMN = "metrics"
#: Ray Data column saying why the build must stop (a full disk, downloads refused), with what
#: to do; empty when all is well.
HALT_COLUMN = "halt"


def clip_metrics(sources: dict[str, str] | None = None) -> dict[str, Any]:
    """A clip's empty ``metrics`` value; ``sources``: source id -> where it came from."""
    return {"seconds": {}, "peak_rss_mb": {}, "sources": sources or {}}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageChain:
    """Build the given stages once per actor; run each batch of clips through them in order.

    A stage gets the batch's clips that are still ok, so a stage that batches (wav2vec2
    on a GPU) can; the others process them one by one. A batched stage's time is split
    evenly over the clips it processed.
    """

    def __init__(self, specs: list[tuple[type[ClipStage], dict[str, Any]]]) -> None:
        self.stages = [cls(**kwargs) for cls, kwargs in specs]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        #: Set once a stage found the disk full: later batches are not started either.
        self.halted = ""

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """A Ray Data batch of clip rows (``state``, and ``metrics``, ``halt`` after another
        chain) through every stage in order."""
        states = [ClipState.from_row({"state": text}) for text in batch["state"]]
        metrics = ([json.loads(text) for text in batch[METRICS_COLUMN]] if METRICS_COLUMN in batch
                   else [clip_metrics() for _ in states])
        halt = [str(text) for text in batch[HALT_COLUMN]] if HALT_COLUMN in batch else [""] * len(states)
        if self.halted:
            halt = [self.halted] * len(states)
        for state in states:  # a remote work area's scratch copy: only what this call writes or downloads
            self.stages[0].work.drop_local(state.record.clip_id)
        for stage in self.stages:
            todo = [(s, m) for s, m, h in zip(states, metrics, halt) if s.ok and not h]
            started = time.perf_counter()
            try:
                stage.run_batch([s for s, _ in todo])
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                clips = ", ".join(s.record.clip_id for s, _ in todo)
                self.halted = (f"out of disk space in {stage.work.root} ({stage.name} stage, clip {clips}): "
                               f"{describe_error(exc)}; free some space")
                halt = [self.halted] * len(states)
                break
            elapsed = time.perf_counter() - started
            ran = [m for s, m in todo if stage.name not in s.cached_stages]
            for m in ran:
                m["seconds"][stage.name] = elapsed / len(ran)
            for s, m in todo:
                m["seconds"].setdefault(stage.name, 0.0)
        for state in states:  # all uploaded: the scratch copy keeps only clips in flight
            self.stages[0].work.drop_local(state.record.clip_id)
        peak = peak_rss_mb()
        for m in metrics:
            m["peak_rss_mb"][self.worker] = peak
        return {"state": [s.to_row()["state"] for s in states],
                METRICS_COLUMN: [json.dumps(m) for m in metrics], HALT_COLUMN: halt}


@dataclass
class StageMetrics:
    """A build's chain metrics: wall seconds per stage summed over clips, peak MiB per worker,
    where each source came from."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: ``host:pid`` of each chain actor -> its peak resident memory (MiB).
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    #: Source id -> ``network`` when a clip downloaded it, else where its clips found it.
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, text: str) -> None:
        """Add one clip's ``metrics`` column value."""
        clip = json.loads(text)
        for stage, seconds in clip["seconds"].items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        for worker, peak in clip["peak_rss_mb"].items():
            self.peak_rss_mb[worker] = max(peak, self.peak_rss_mb.get(worker, 0.0))
        for source, origin in clip["sources"].items():
            if self.sources.get(source) != "network":
                self.sources[source] = origin

    def summary(self) -> str:
        """One line: seconds per stage, and the largest worker's peak memory."""
        times = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in self.stage_seconds.items())
        peak = max(self.peak_rss_mb.values(), default=0.0)
        return f"stage time (summed over clips): {times}; peak worker memory {peak:.0f} MiB"


def chain_specs(stages: list[ClipStage]) -> list[tuple[type[ClipStage], dict[str, Any]]]:
    """What rebuilds ``stages`` in a Ray actor."""
    return [(type(stage), stage.constructor_kwargs()) for stage in stages]
