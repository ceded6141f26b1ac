"""The commands on a finished release: inspect, stats, verify, card, export, preview; and the
registries a user picks from: scores (for ``--filter``) and datasets (for ``--dataset``).

Exit codes of ``verify``: 0 the release matches ``release.json``; 1 a shard or the manifest
disagrees with it (each problem is printed with the shard's name); 2 no release. The other
commands exit 2 when the folder holds no built dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from datasets_spec import DATASETS
from pipelines.cli_common import EXIT_BAD_RELEASE, ReleaseDir, Verbose, console, fail_setup, setup_logging


def inspect(
    out: ReleaseDir,
    samples: Annotated[int, typer.Option(help="How many samples to list.", min=0)] = 3,
) -> None:
    """Show a built dataset's release file and its first samples, read back with webdataset."""
    from pipelines.tools.report import inspect_release

    try:
        inspect_release(out, samples, console)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no built dataset ({exc})") from exc


def stats(out: ReleaseDir) -> None:
    """Summarise manifest.parquet: clips per status, failure reasons, durations."""
    from pipelines.tools.report import manifest_stats

    try:
        manifest_stats(out, console)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no manifest.parquet ({exc})") from exc


def scores() -> None:
    """List the registered quality scores: type, unit, aliases, how each is computed, what it measures."""
    from rich.table import Table

    from aniportrait.scores import SCORES

    table = Table(title="quality scores (numbers can be named in --filter, e.g. --filter 'face_px>=150,sync_conf>=3')")
    for column in ("score", "type", "unit", "aliases", "computed by", "meaning"):
        table.add_column(column, overflow="fold")
    for score in SCORES:
        table.add_row(score.name, str(score.type), score.unit, ", ".join(score.aliases), score.how, score.meaning)
    Console().print(table)


def datasets() -> None:
    """List the datasets --dataset can name: licence, metadata, mirror file names, homepage."""
    from rich.table import Table

    table = Table(title="datasets for build --dataset")
    for column in ("dataset", "licence", "metadata", "mirror files", "homepage"):
        table.add_column(column, overflow="fold")
    for name, spec in sorted(DATASETS.items()):
        licence = spec.licence.hub_id + (f" / {spec.licence.name}" if spec.licence.name else "")
        table.add_row(name, licence, spec.metadata_note, spec.mirror_naming, spec.homepage)
    Console().print(table)


def export(
    out: ReleaseDir,
    dest: Annotated[Path, typer.Argument(help="Local folder for the official layout (clips/<id>/ frames and .npy files, training_data.json).")],
    min_frames: Annotated[int, typer.Option(help="Drop clips left with fewer frames that have a face.", min=1)] = 30,
    verbose: Verbose = False,
) -> None:
    """Export to the official AniPortrait preprocessing layout (frame PNGs, per-frame landmarks, JSON index)."""
    setup_logging(verbose)
    from pipelines.tools.export import export_official

    try:
        summary = export_official(out, dest, min_frames=min_frames)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no built dataset ({exc})") from exc
    console.print(f"[green]{summary['clips_written']} clips, {summary['frames_written']} frames[/] written to "
                  f"{summary['dest']}; {summary['frames_skipped']} frames without a face skipped")
    for clip_id, reason in summary["clips_dropped"].items():
        console.print(f"[yellow]dropped[/] {clip_id}: {reason}")
    console.print(f"index for the official training config (data.json_path): {summary['index']}")


def preview(
    out: ReleaseDir,
    clip_id: Annotated[str, typer.Argument(help="The clip to preview.")],
    dest: Annotated[Path, typer.Option(help="Folder for <clip>_sheet.png and <clip>_overlay.mp4.")] = Path("preview"),
    columns: Annotated[int, typer.Option(help="Tiles per row of the contact sheet.", min=1)] = 4,
    frames: Annotated[int, typer.Option(help="Evenly spaced frames on the contact sheet.", min=1)] = 8,
) -> None:
    """Write a contact sheet and an overlay video (frames + pose image + audio) of one clip."""
    from aniportrait.media.probe import MediaError
    from pipelines.tools.preview import make_preview

    try:
        sheet, video = make_preview(out, clip_id, dest, columns=columns, frames=frames)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no built dataset ({exc})") from exc
    except (KeyError, ValueError, MediaError) as exc:
        raise fail_setup(str(exc)) from exc
    console.print(f"wrote {sheet} and {video}")


def card(
    out: ReleaseDir,
    dest: Annotated[Optional[str], typer.Option("--out", help="Folder or URI for README.md and card/*.png (default: the dataset directory).")] = None,
) -> None:
    """Write the dataset card: README.md with the Hugging Face YAML header, tables and plots."""
    from pipelines.tools.card import write_card

    try:
        result = write_card(out, dest)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no built dataset ({exc})") from exc
    console.print(f"wrote {result.readme} and {len(result.plots)} plots")



def verify(out: ReleaseDir) -> None:
    """Re-check every shard's sha256, size and samples, and the manifest, against release.json."""
    from rich.table import Table

    from pipelines.tools.verify import verify_release

    try:
        report = verify_release(out)
    except FileNotFoundError as exc:
        raise fail_setup(f"{out} holds no release.json ({exc})") from exc
    except ValueError as exc:
        raise fail_setup(f"cannot read {out}/release.json: {exc}") from exc
    table = Table(title=f"verify {out}")
    for column in ("shard", "samples", "bytes", "sha256", "result"):
        table.add_column(column)
    for shard in report.shards:
        samples = "?" if shard.keys is None else str(len(shard.keys))
        table.add_row(shard.name, f"{samples} / {shard.expected_samples}", str(shard.size or "-"),
                      (shard.sha256 or "-")[:16], "[green]ok[/]" if shard.ok else f"[red]{'; '.join(shard.problems)}[/]")
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}")
    if not report.ok:
        console.print(f"[bold red]{len(report.all_problems())} problem(s)[/]; exit code {EXIT_BAD_RELEASE}")
        raise typer.Exit(EXIT_BAD_RELEASE)
    console.print(f"[green]all {len(report.shards)} shards and the manifest match release.json[/]")
