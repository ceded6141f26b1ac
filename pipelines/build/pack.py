"""Pack phase: finished clips -> WebDataset shards, ``manifest.parquet``, ``release.json``.

Shards are planned per *generation*: the release version in which a clip first
appeared (see :mod:`pipelines.build.release`). Within a generation, clips are sorted by id
and cut by a clip count or a byte size; names are
``{dataset}-{split}[-rejected][-vNNN]-{index:06d}.tar`` where ``-vNNN`` is the
generation, left out for generation 1 (so a first release keeps the plain names and
never renames them), and ``-rejected`` marks shards of clips a curation rule rejected
(``--keep-rejected``). Adding clips thus writes new shards and leaves the old ones alone.

Deterministic by construction: each shard is written with webdataset's ``TarWriter``
(fixed mtime, owner and member order; see :func:`write_samples`) to a temporary name and
moved into place; the manifest and the release file come last. The result does not depend on
worker count or completion order. A shard whose planned content (its fingerprint) is the previous
release's is not written again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aniportrait.format import MANIFEST_NAME, META, RELEASE_NAME, release_bytes
from aniportrait.manifest import manifest_bytes, manifest_row, sample_json
from aniportrait.schema import STATUS_FILTERED, STATUS_OK, ClipState
from aniportrait.storage import OutputDir, sha256_bytes
from pipelines.build.workarea import WorkArea

log = logging.getLogger(__name__)

SHARD_MTIME = 0
SHARD_OWNER = "aniportrait"
SHARD_MODE = 0o444
REJECTED = "rejected"


def shard_name(dataset: str, split: str, index: int, *, generation: int = 1, rejected: bool = False) -> str:
    """``{dataset}-{split}[-rejected][-vNNN]-{index:06d}.tar`` (no ``-vNNN`` for generation 1)."""
    parts = [dataset, split] + ([REJECTED] if rejected else []) + ([f"v{generation:03d}"] if generation > 1 else [])
    return "-".join(parts + [f"{index:06d}"]) + ".tar"


@dataclass(frozen=True)
class ShardPlan:
    """Which clips go into which shard, and the generation the shard belongs to."""

    name: str
    states: tuple[ClipState, ...]
    generation: int = 1
    rejected: bool = False

    def fingerprint(self, chain_hash: str) -> str:
        """A hash of everything the shard's bytes depend on: its name, the settings of the
        stage chain that made the clips' files (``chain_hash``) and the clips' states."""
        clips = [{k: v for k, v in s.to_dict().items() if k not in ("cached_stages", "source_path")}
                 for s in self.states]
        text = json.dumps({"name": self.name, "chain": chain_hash, "clips": clips}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """The tar header of one shard member: fixed mtime, mode and owner, nothing of the build's."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, SHARD_MTIME, SHARD_MODE, SHARD_OWNER, SHARD_OWNER
    return info


def member_size(name: str, size: int) -> int:
    """Bytes one tar member of ``size`` bytes takes in a shard: its header(s), exactly as
    :func:`write_samples` writes them (pax extras for long names), plus the data padded to 512."""
    header = member_info(name, size).tobuf(tarfile.DEFAULT_FORMAT, tarfile.ENCODING, "surrogateescape")
    return len(header) + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def sample_size(state: ClipState, work: WorkArea) -> int:
    """Bytes the clip's sample takes in a shard (its ``json`` member and its files)."""
    key = state.record.clip_id
    total = member_size(f"{key}.{META.name}", len(sample_json(state)))
    sizes = work.sizes(key) if state.outputs else {}
    for member, filename in state.outputs.items():
        total += member_size(f"{key}.{member}", sizes[filename])
    return total


def tar_size(members: int) -> int:
    """Size of a tar whose members take ``members`` bytes: two zero blocks end it and
    tar pads the whole to its 10 KiB record size."""
    return -(-(members + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def shard_size(states: tuple[ClipState, ...] | list[ClipState], work: WorkArea) -> int:
    """The exact size of the shard that holds ``states``."""
    return tar_size(sum(sample_size(s, work) for s in states))


def plan_shards(states: list[ClipState], dataset: str, split: str, generations: dict[str, int], *,
                samples: int | None = None, max_bytes: int | None = None, work: WorkArea | None = None,
                keep_rejected: bool = False) -> list[ShardPlan]:
    """Cut the shardable clips into shards, per generation (and rejected apart).

    ``ok`` clips go into the normal shards; ``filtered`` clips into ``rejected`` ones when
    ``keep_rejected``; other clips into none. Each group is sorted by clip id and cut
    every ``samples`` clips, or before the clip that would take the shard over
    ``max_bytes`` (sizes read from the files in ``work``; a clip bigger than that gets a
    shard of its own).
    """
    if (samples is None) == (max_bytes is None):
        raise ValueError("plan shards by a clip count or by a byte size, exactly one")
    groups: dict[tuple[bool, int], list[ClipState]] = {}
    for state in states:
        rejected = state.status == STATUS_FILTERED
        if state.status == STATUS_OK or (rejected and keep_rejected):
            groups.setdefault((rejected, generations[state.record.clip_id]), []).append(state)
    plans: list[ShardPlan] = []
    for (rejected, generation), members in sorted(groups.items()):
        members.sort(key=lambda s: s.record.clip_id)
        if samples is not None:
            chunks = [members[i:i + samples] for i in range(0, len(members), samples)]
        else:
            chunks = _cut_by_size(members, max_bytes, work)  # type: ignore[arg-type]
        plans += [ShardPlan(shard_name(dataset, split, i, generation=generation, rejected=rejected), tuple(chunk),
                            generation, rejected) for i, chunk in enumerate(chunks)]
    return plans


def _cut_by_size(states: list[ClipState], max_bytes: int, work: WorkArea | None) -> list[list[ClipState]]:
    if work is None:
        raise ValueError("planning shards by size needs the work area (the clips' files)")
    chunks: list[list[ClipState]] = []
    current: list[ClipState] = []
    used = 0
    for state in states:
        size = sample_size(state, work)
        if current and tar_size(used + size) > max_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(state)
        used += size
    return chunks + ([current] if current else [])


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
    sample: dict[str, bytes | str] = {"__key__": state.record.clip_id, META.name: sample_json(state)}
    for member, filename in sorted(state.outputs.items()):
        sample[member] = work.read_bytes(state.record.clip_id, filename)
    return sample


def write_samples(stream: Any, samples: Iterable[dict[str, bytes | str]]) -> None:
    """Write WebDataset samples to ``stream`` as one tar with webdataset's ``TarWriter``
    (fixed mtime and owner, members in name order: the headers :func:`member_info` sizes).

    ``webdataset`` is imported here, not at module level: it imports torch, seconds of
    start-up that the build driver and the fetch actors never need.
    """
    import webdataset as wds

    writer = wds.TarWriter(stream, user=SHARD_OWNER, group=SHARD_OWNER, mtime=SHARD_MTIME)
    for sample in samples:
        writer.write(sample)
    writer.close()


class WriteShard:
    """Write planned shards atomically; :meth:`write` returns a shard's name, sha256, size and
    sample count.

    Making one imports ``webdataset`` (and with it torch, about a second): a writer made
    early, as an actor started while the clips are processed (see
    :mod:`pipelines.build.writers`), writes at once when the pack phase comes.
    """

    def __init__(self, out_uri: str, work_dir: str) -> None:
        importlib.import_module("webdataset")
        self.out_uri, self.work_dir = out_uri, work_dir

    @functools.cached_property
    def out(self) -> OutputDir:
        """The output folder, opened at the first write: an error opening it (no credentials
        on this node) is then the write's, with its own type, not the writer's start-up's."""
        return OutputDir.from_uri(self.out_uri)

    @functools.cached_property
    def work(self) -> WorkArea:
        """The work area the clips' files are read from."""
        return WorkArea(self.work_dir)

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Write the shard of one :func:`plan_rows` row."""
        name = row["name"]
        states = [ClipState.from_dict(s) for s in json.loads(row["states"])]
        with self.out.atomic_writer(name) as stream:
            hashing = _HashingWriter(stream)
            write_samples(hashing, (sample_members(state, self.work) for state in states))
        return {"name": name, "sha256": hashing.digest.hexdigest(), "size": hashing.size, "samples": len(states)}


def plan_rows(plans: list[ShardPlan]) -> list[dict[str, Any]]:
    """One row per shard: its name and its clips' states (JSON), what a writer needs."""
    return [{"name": p.name, "states": json.dumps([s.to_dict() for s in p.states], sort_keys=True)} for p in plans]


def remove_stale_shards(out: OutputDir, dataset: str, split: str, keep: set[str]) -> list[str]:
    """Delete shards of this dataset/split that the current plan no longer has."""
    prefix = f"{dataset}-{split}-"
    stale = [n for n in out.list_names(".tar") if n.startswith(prefix) and n not in keep]
    for name in stale:
        log.info("removing stale shard %s", name)
        out.delete(name)
    return stale


def write_if_changed(out: OutputDir, name: str, data: bytes) -> bool:
    """Write ``name`` unless it already holds exactly ``data``; True when written."""
    try:
        if out.read_bytes(name) == data:
            return False
    except FileNotFoundError:
        pass
    out.write_bytes(name, data)
    return True


def write_manifest(out: OutputDir, states: list[ClipState], shard_of: dict[str, str],
                   generations: dict[str, int]) -> dict[str, Any]:
    """Write ``manifest.parquet`` (when its bytes changed); return its entry for the release file."""
    rows = [{**manifest_row(s, shard_of.get(s.record.clip_id)), "generation": generations[s.record.clip_id]}
            for s in states]
    data = manifest_bytes(rows)
    write_if_changed(out, MANIFEST_NAME, data)
    return {"name": MANIFEST_NAME, "sha256": sha256_bytes(data), "size": len(data), "rows": len(rows)}


def write_release(out: OutputDir, release: dict[str, Any]) -> None:
    """Write ``release.json`` (:func:`aniportrait.format.release_bytes`) last, when its bytes changed."""
    write_if_changed(out, RELEASE_NAME, release_bytes(release))
