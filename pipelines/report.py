"""Read a built dataset back: the release file, samples from the shards, manifest stats."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from aniportrait.storage import OutputDir
from pipelines.export import iter_samples
from pipelines.pack import MANIFEST_NAME, RELEASE_NAME


def inspect_release(uri: str, samples: int, console: Console) -> None:
    """Print the release summary and list the first ``samples`` samples of the first shard."""
    out = OutputDir.from_uri(uri)
    release = json.loads(out.read_bytes(RELEASE_NAME))
    counts = release["counts"]
    console.print(f"[bold]{release['dataset']}[/] {release['split']}: {counts['ok']} clips in "
                  f"{len(release['shards'])} shards, {counts['failed']} failed; config {release['config_hash']}")
    shards = Table(title="shards")
    for column in ("name", "samples", "bytes", "sha256"):
        shards.add_column(column)
    for shard in release["shards"]:
        shards.add_row(shard["name"], str(shard["samples"]), str(shard["size"]), shard["sha256"][:16])
    console.print(shards)
    if not release["shards"] or samples == 0:
        return
    name = release["shards"][0]["name"]
    table = Table(title=f"first samples of {name}")
    for column in ("key", "members", "frames", "duration (s)"):
        table.add_column(column)
    for sample in itertools.islice(iter_samples(uri, [name]), samples):
        meta = json.loads(sample["json"])
        members = ", ".join(f"{k} ({len(v)} B)" for k, v in sorted(sample.items()) if not k.startswith("__"))
        table.add_row(sample["__key__"], members, str(meta["info"].get("frames")), str(meta["info"].get("duration_s")))
    console.print(table)


def manifest_stats(uri: str, console: Console) -> None:
    """Print clip counts by status, failure reasons and duration totals from the manifest."""
    out = OutputDir.from_uri(uri)
    table = pq.read_table(io.BytesIO(out.read_bytes(MANIFEST_NAME))).to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    seconds = sum(r["duration_s"] or 0 for r in ok)
    console.print(f"{len(table)} clips: {len(ok)} ok ({seconds / 60:.1f} min, "
                  f"{sum(r['frames'] or 0 for r in ok)} frames), {len(table) - len(ok)} failed")
    reasons = Counter(f"{r['failed_stage']}: {r['error']}" for r in table if r["status"] != "ok")
    if reasons:
        failures = Table(title="failure reasons")
        failures.add_column("clips", justify="right")
        failures.add_column("reason")
        for reason, count in reasons.most_common():
            failures.add_row(str(count), reason)
        console.print(failures)
    if ok:
        durations = sorted(r["duration_s"] for r in ok)
        console.print(f"clip duration: min {durations[0]:.2f} s, median {durations[len(durations) // 2]:.2f} s, "
                      f"max {durations[-1]:.2f} s; with audio: {sum(bool(r['has_audio']) for r in ok)}")
