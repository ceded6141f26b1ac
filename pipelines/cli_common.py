"""What every ``aniportrait-data`` command shares: the console, exit codes, logging, set-up errors
and the option types more than one command takes (defined once here)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

#: Every clip (job) succeeded.
EXIT_OK = 0
#: ``verify``: a shard or the manifest disagrees with ``release.json``.
EXIT_BAD_RELEASE = 1
#: A usage or set-up error, or a stop a rerun of the same command goes on from.
EXIT_USAGE = 2
#: Some clips (jobs) failed; the good ones are written.
EXIT_PARTIAL = 3

#: Messages go to stderr; tables a user asked for (``scores``, ``datasets``) to stdout.
console = Console(stderr=True)

ReleaseDir = Annotated[str, typer.Argument(help="A built dataset directory or URI.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log every clip.")]


def setup_logging(verbose: bool) -> None:
    """Rich log lines on stderr: INFO with ``--verbose``, else warnings only."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def fail_setup(message: str) -> typer.Exit:
    """Print ``message`` as an error and return the exit (code 2) to raise."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(EXIT_USAGE)
