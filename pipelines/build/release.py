"""Release versions: the previous release in the output directory, and what changed since.

Every clip belongs to a *generation*: the release version in which it first appeared in
the manifest (column ``generation``). Shards are planned per generation
(:func:`pipelines.build.pack.plan_shards`), so new clips get new shards, and a change to old
clips (removed, retried, rebuilt) rewrites only the shards whose content changed.
``release.json`` carries ``version``, raised only when something changed, and
``changes``: what that version changed against the one before. A rebuild with nothing
changed keeps both, so it writes the same bytes. A missing or unreadable previous
release (or one of another dataset or split) starts again at version 1; an error of the
store itself (network, credentials) stops the build instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aniportrait.format import read_manifest, read_release
from aniportrait.schema import STATUS_FAILED, ClipState
from aniportrait.storage import OutputDir


@dataclass(frozen=True)
class PreviousRelease:
    """What the output directory held before this build: its release file and manifest facts."""

    release: dict[str, Any]
    generations: dict[str, int]
    statuses: dict[str, str]
    sources: dict[str, str]

    @property
    def version(self) -> int:
        return int(self.release.get("version", 1))

    def shards(self) -> dict[str, dict[str, Any]]:
        """Every shard entry of the release (normal and rejected) by name."""
        entries = self.release.get("shards", []) + self.release.get("rejected_shards", [])
        return {entry["name"]: entry for entry in entries}

    def failed(self) -> dict[str, str]:
        """Clip id -> source id of the clips recorded as failed."""
        return {cid: self.sources[cid] for cid, status in self.statuses.items() if status == STATUS_FAILED}


def read_previous(out: OutputDir, dataset: str, split: str) -> PreviousRelease | None:
    """The release already in ``out`` for ``dataset``/``split``, or ``None``."""
    try:
        release = read_release(out)
        columns = read_manifest(out).to_pydict()
        ids, statuses, sources = columns["clip_id"], columns["status"], columns["source_id"]
    except (FileNotFoundError, ValueError, KeyError):  # missing or unreadable; a failing store raises
        return None
    if not isinstance(release, dict) or (release.get("dataset"), release.get("split")) != (dataset, split):
        return None
    # Manifests written before versioning have no generation column: all of it is generation 1.
    generations = columns.get("generation") or [1] * len(ids)
    return PreviousRelease(
        release=release,
        generations={cid: int(g or 1) for cid, g in zip(ids, generations)},
        statuses=dict(zip(ids, statuses)),
        sources=dict(zip(ids, sources)),
    )


def assign_generations(states: list[ClipState], previous: PreviousRelease | None) -> dict[str, int]:
    """Clip id -> generation: the previous one for known clips, the next version for new ones."""
    if previous is None:
        return {s.record.clip_id: 1 for s in states}
    new = previous.version + 1
    return {s.record.clip_id: previous.generations.get(s.record.clip_id, new) for s in states}


def describe_changes(previous: PreviousRelease | None, states: list[ClipState], config_hash: str,
                     manifest_sha256: str, written: list[str], unchanged: list[str],
                     removed: list[str]) -> dict[str, Any]:
    """What this build changed against ``previous`` (sorted lists, no timestamps)."""
    before = previous.statuses if previous else {}
    now = {s.record.clip_id: s.status for s in states}
    old = previous.release if previous else {}
    return {
        "since_version": previous.version if previous else None,
        "clips": {
            "added": sorted(set(now) - set(before)),
            "removed": sorted(set(before) - set(now)),
            "status": [{"clip_id": cid, "from": before[cid], "to": now[cid]}
                       for cid in sorted(set(now) & set(before)) if before[cid] != now[cid]],
        },
        "shards": {"written": sorted(written), "unchanged": sorted(unchanged), "removed": sorted(removed)},
        "config_changed": config_hash != old.get("config_hash"),
        "manifest_changed": manifest_sha256 != old.get("manifest", {}).get("sha256"),
    }


def next_version(previous: PreviousRelease | None, changes: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The release's version and ``changes``: the previous ones when nothing changed."""
    if previous is None:
        return 1, changes
    clips, shards = changes["clips"], changes["shards"]
    changed = (changes["config_changed"] or changes["manifest_changed"] or any(clips.values())
               or shards["written"] or shards["removed"])
    if not changed:
        return previous.version, previous.release.get("changes", changes)
    return previous.version + 1, changes
