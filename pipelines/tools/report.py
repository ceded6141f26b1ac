"""Read a built dataset back: the release file, samples from the shards, manifest stats."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
from rich.console import Console
from rich.table import Table

from aniportrait.format import iter_samples, read_manifest, read_meta, read_release
from aniportrait.reasons import REASONS
from aniportrait.scores import SCORES, ScoreRegistry
from aniportrait.storage import OutputDir


def inspect_release(uri: str, samples: int, console: Console) -> None:
    """Print the release summary and list the first ``samples`` samples of the first shard."""
    out = OutputDir.from_uri(uri)
    release = read_release(out)
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
        meta = read_meta(sample)
        members = ", ".join(f"{k} ({len(v)} B)" for k, v in sorted(sample.items()) if not k.startswith("__"))
        table.add_row(sample["__key__"], members, str(meta["info"].get("frames")), str(meta["info"].get("duration_s")))
    console.print(table)


def manifest_stats(uri: str, console: Console) -> None:
    """Print clips by status, failure reasons, clips removed per filter rule and score distributions."""
    out = OutputDir.from_uri(uri)
    table = read_manifest(out).to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    seconds = sum(r["duration_s"] or 0 for r in ok)
    by_status = Counter(r["status"] for r in table)
    others = ", ".join(f"{count} {status}" for status, count in sorted(by_status.items()) if status != "ok")
    console.print(f"{len(table)} clips: {len(ok)} ok ({seconds / 60:.1f} min, "
                  f"{sum(r['frames'] or 0 for r in ok)} frames){', ' + others if others else ''}")
    _print_reasons(console, [r for r in table if r["status"] in ("failed", "filtered")])
    _print_counts(console, "failure messages", "stage: error",
                  Counter(f"{r['failed_stage']}: {r['error']}" for r in table if r["status"] == "failed"))
    _print_counts(console, "clips removed per rule", "rule",
                  Counter(r["error"].removeprefix("filtered:") for r in table if r["status"] == "filtered"))
    scored = [r for r in table if r["status"] in ("ok", "filtered")]
    distributions = score_distributions(scored)
    if distributions:
        scores = Table(title=f"scores of {len(scored)} ok and filtered clips")
        for column in ("score", "unit", "clips", "min", "p10", "median", "p90", "max"):
            scores.add_column(column, justify="left" if column in ("score", "unit") else "right")
        for name, row in distributions.items():
            scores.add_row(name, SCORES[name].unit, str(row["clips"]),
                           *(f"{row[k]:.4g}" for k in ("min", "p10", "median", "p90", "max")))
        console.print(scores)
    if ok:
        durations = sorted(r["duration_s"] for r in ok)
        console.print(f"clip duration: min {durations[0]:.2f} s, median {durations[len(durations) // 2]:.2f} s, "
                      f"max {durations[-1]:.2f} s; with audio: {sum(bool(r['has_audio']) for r in ok)}")


def score_distributions(rows: list[dict], scores: ScoreRegistry = SCORES) -> dict[str, dict[str, float]]:
    """min / p10 / median / p90 / max of each numeric score of the registry that has values in
    the manifest ``rows`` (derived scores have no column)."""
    result = {}
    for name in (s.name for s in scores if s.numeric and s.derive is None):
        values = np.array([r[name] for r in rows if r.get(name) is not None], np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            p = np.percentile(values, [0, 10, 50, 90, 100])
            result[name] = {"clips": len(values), **dict(zip(("min", "p10", "median", "p90", "max"), map(float, p)))}
    return result


def _print_reasons(console: Console, rows: list[dict]) -> None:
    """Failed and filtered clips per reason code, with what the code means (``aniportrait.reasons``)."""
    counts = Counter((r.get("reason") or "unknown", r["status"]) for r in rows)
    if not counts:
        return
    table = Table(title="failed and filtered clips per reason")
    for column in ("clips", "reason", "status", "meaning"):
        table.add_column(column, justify="right" if column == "clips" else "left")
    for (code, status), count in counts.most_common():
        known = REASONS.get(code)
        table.add_row(str(count), code, status, known.meaning if known else "")
    console.print(table)


def _print_counts(console: Console, title: str, label: str, counts: Counter) -> None:
    if not counts:
        return
    table = Table(title=title)
    table.add_column("clips", justify="right")
    table.add_column(label)
    for key, count in counts.most_common():
        table.add_row(str(count), key)
    console.print(table)
