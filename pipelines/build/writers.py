"""The pack phase's shard writers: Ray actors started while the clips are processed.

A shard writer imports ``webdataset`` and with it torch: with a fresh worker process,
about 1.3 s on a 2-core machine, the better part of the fixed cost of a small build
when it waits until the pack phase. Started with the process phase, the writers do that
in the meantime, at the lowest priority (on CPU the clip workers leave idle), and
write as soon as the clips are done (measured on the embedded sample: the pack phase
1.4-1.7 s -> 0.08 s, the whole build 1-1.5 s shorter; ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util import ActorPool

from pipelines.build.pack import WriteShard

#: A writer that dies (its node lost) is restarted and its shard written again: a shard
#: goes to a temporary name and is renamed when whole, so a second write is harmless.
WRITER_RESTARTS = 3
#: The writers' niceness: the lowest priority.
WRITER_NICENESS = 19
#: At most this many writers: writing is mostly I/O, and each writer holds torch in memory
#: (through webdataset, ~0.3 GB) for the whole build.
MAX_WRITERS = 4


def writer_count(workers: int, clips: int, shard_samples: int | None) -> int:
    """As many writers as clip workers, up to :data:`MAX_WRITERS`, and no more than the shards
    ``clips`` can fill when shards are cut by a clip count (by size, their number is known
    only when packing)."""
    count = min(workers, MAX_WRITERS)
    return count if shard_samples is None else max(1, min(count, math.ceil(clips / shard_samples)))


class BackgroundWriteShard(WriteShard):
    """A :class:`~pipelines.build.pack.WriteShard` that runs at the lowest CPU priority
    (niceness 19; Ray starts its workers, the clip workers too, at 15): its start-up takes
    mostly CPU time the clip workers leave idle. Made only as a Ray actor (a process of its
    own, ended with the build)."""

    def __init__(self, out_uri: str, work_dir: str) -> None:
        os.setpriority(os.PRIO_PROCESS, 0, WRITER_NICENESS)
        super().__init__(out_uri, work_dir)


class ShardWriters:
    """``count`` :class:`BackgroundWriteShard` actors, spread over the nodes.

    They reserve no CPU, so they never hold back a clip worker. :meth:`start` starts them
    (:meth:`write` does when nothing did), :meth:`close` ends them; use as a context manager.
    """

    def __init__(self, out_uri: str, work_dir: str, count: int) -> None:
        self.out_uri, self.work_dir, self.count = out_uri, work_dir, count
        self.actors: list[ActorHandle] = []

    def start(self) -> None:
        """Start the writers' processes (their imports take a while: start them early)."""
        if not self.actors:
            actor = ray.remote(num_cpus=0, max_restarts=WRITER_RESTARTS, max_task_retries=WRITER_RESTARTS,
                               scheduling_strategy="SPREAD")(BackgroundWriteShard)
            self.actors = [actor.remote(self.out_uri, self.work_dir) for _ in range(self.count)]

    def write(self, rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Write the shards of :func:`~pipelines.build.pack.plan_rows` rows; yield each one's
        entry (name, sha256, size, samples) as it is done."""
        if not rows:
            return iter(())
        self.start()
        return ActorPool(self.actors).map_unordered(lambda writer, row: writer.write.remote(row), rows)

    def close(self) -> None:
        """End the writers' processes."""
        for writer in self.actors:
            ray.kill(writer)
        self.actors = []

    def __enter__(self) -> ShardWriters:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
