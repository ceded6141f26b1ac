"""Rich progress and the end-of-build summary table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aniportrait.schema import METADATA_STAGE, STATUS_FAILED, STATUS_FILTERED, STATUS_OK, STATUS_SPLIT, ClipState


def make_progress(console: Console) -> Progress:
    """A progress display with one line per stage of the build."""
    return Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def summary_table(states: Iterable[ClipState], stage_names: list[str], shards: int) -> Table:
    """Per stage: clips that ran there, came from the cache (resume), or failed there; metadata
    entries that could not be read come first."""
    states = list(states)
    table = Table(title="aniportrait-data build")
    for column in ("stage", "ran", "from cache", "failed / removed"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    unreadable = sum(s.failed_stage == METADATA_STAGE for s in states)
    if unreadable:
        table.add_row(METADATA_STAGE, str(len(states)), "", str(unreadable))
    for index, name in enumerate(stage_names):
        earlier = {METADATA_STAGE, *stage_names[:index]}
        reached = [s for s in states if s.ok or s.failed_stage not in earlier]
        cached = sum(name in s.cached_stages for s in reached)
        failed = sum(s.failed_stage == name for s in reached)
        table.add_row(name, str(len(reached) - cached), str(cached), str(failed))
    counts = Counter(s.status for s in states)
    table.add_section()
    removed = ", ".join(f"{counts[status]} {status}" for status in (STATUS_FAILED, STATUS_FILTERED, STATUS_SPLIT)
                        if counts[status])
    table.add_row("clips", f"{counts[STATUS_OK]} ok", "", removed or "0 failed")
    table.add_row("shards", str(shards), "", "")
    return table


def failure_table(states: Iterable[ClipState], limit: int = 10) -> Table | None:
    """The most common failure reasons, so a user sees at once what went wrong."""
    reasons = Counter(f"{s.failed_stage}: {s.error}" for s in states if s.status in (STATUS_FAILED, STATUS_FILTERED))
    if not reasons:
        return None
    table = Table(title="failed and filtered clips (all in manifest.parquet)")
    table.add_column("clips", justify="right")
    table.add_column("reason")
    for reason, count in reasons.most_common(limit):
        table.add_row(str(count), reason)
    return table
