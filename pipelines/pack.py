"""Pack phase: finished clips -> WebDataset shards, ``manifest.parquet``, ``release.json``.

Deterministic by construction: clips are sorted by id and assigned to shards by count,
each shard is written with webdataset's ``TarWriter`` (fixed mtime, owner and member
order) to a temporary name and moved into place; the manifest and the release file
come last. The result does not depend on worker count or completion order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import webdataset as wds

from aniportrait.manifest import manifest_bytes, manifest_row, sample_json
from aniportrait.schema import ClipState
from aniportrait.storage import OutputDir, sha256_bytes
from pipelines.workarea import WorkArea

log = logging.getLogger(__name__)

SHARD_MTIME = 0
SHARD_OWNER = "aniportrait"
MANIFEST_NAME = "manifest.parquet"
RELEASE_NAME = "release.json"


def shard_name(dataset: str, split: str, index: int) -> str:
    return f"{dataset}-{split}-{index:06d}.tar"


@dataclass(frozen=True)
class ShardPlan:
    """Which clips go into which shard."""

    name: str
    states: tuple[ClipState, ...]


def plan_shards(states: list[ClipState], dataset: str, split: str, samples_per_shard: int) -> list[ShardPlan]:
    """Successful clips sorted by id, cut into shards of ``samples_per_shard``."""
    good = sorted((s for s in states if s.ok), key=lambda s: s.record.clip_id)
    return [
        ShardPlan(shard_name(dataset, split, i // samples_per_shard), tuple(good[i:i + samples_per_shard]))
        for i in range(0, len(good), samples_per_shard)
    ]


class _HashingWriter:
    """File-like wrapper that hashes and counts what passes through to ``stream``."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.digest, self.size = stream, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.stream.write(data)


def sample_members(state: ClipState, work: WorkArea) -> dict[str, bytes | str]:
    """The WebDataset sample of one clip: ``__key__`` plus one member per output."""
    sample: dict[str, bytes | str] = {"__key__": state.record.clip_id, "json": sample_json(state)}
    for member, filename in sorted(state.outputs.items()):
        sample[member] = work.clip_file(state.record.clip_id, filename).read_bytes()
    return sample


class WriteShard:
    """Write one planned shard atomically; return its name, sha256, size and sample count."""

    def __init__(self, out_uri: str, work_dir: str) -> None:
        self.out = OutputDir.from_uri(out_uri)
        self.work = WorkArea(work_dir)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        name = row["name"]
        states = [ClipState.from_dict(s) for s in json.loads(row["states"])]
        with self.out.atomic_writer(name) as stream:
            hashing = _HashingWriter(stream)
            writer = wds.TarWriter(hashing, user=SHARD_OWNER, group=SHARD_OWNER, mtime=SHARD_MTIME)
            for state in states:
                writer.write(sample_members(state, self.work))
            writer.close()
        return {"name": name, "sha256": hashing.digest.hexdigest(), "size": hashing.size, "samples": len(states)}


def plan_rows(plans: list[ShardPlan]) -> list[dict[str, Any]]:
    return [{"name": p.name, "states": json.dumps([s.to_dict() for s in p.states], sort_keys=True)} for p in plans]


def remove_stale_shards(out: OutputDir, dataset: str, split: str, keep: set[str]) -> list[str]:
    """Delete shards of this dataset/split left by an earlier, larger build."""
    prefix = f"{dataset}-{split}-"
    stale = [n for n in out.list_names(".tar") if n.startswith(prefix) and n not in keep]
    for name in stale:
        log.info("removing stale shard %s", name)
        out.fs.delete_file(out.path(name))
    return stale


def write_manifest(out: OutputDir, states: list[ClipState], shard_of: dict[str, str]) -> dict[str, Any]:
    """Write ``manifest.parquet``; return its entry for the release file."""
    rows = [manifest_row(s, shard_of.get(s.record.clip_id)) for s in states]
    data = manifest_bytes(rows)
    out.write_bytes(MANIFEST_NAME, data)
    return {"name": MANIFEST_NAME, "sha256": sha256_bytes(data), "size": len(data), "rows": len(rows)}


def write_release(out: OutputDir, release: dict[str, Any]) -> None:
    """Write ``release.json`` (sorted keys, no timestamps) last."""
    out.write_bytes(RELEASE_NAME, (json.dumps(release, sort_keys=True, indent=2) + "\n").encode())
