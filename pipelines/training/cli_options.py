"""Command-line options shared by every ``aniportrait-data train`` command (typer ``Annotated`` types)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Shards = Annotated[str, typer.Option(help="Shards: a built dataset folder or URI, a folder of .tar, a glob, "
                                          "brace patterns (x-{000..009}.tar), several joined by '::'.")]
Steps = Annotated[int, typer.Option(help="Optimizer steps in all (a resumed run continues up to it).", min=1)]
Seed = Annotated[int, typer.Option(help="Seed of the weights, the sampling and every shuffle.")]
Workers = Annotated[int, typer.Option(help="Data-parallel workers: 1 runs here, N runs Ray Train (DDP).", min=1)]
Gpu = Annotated[bool, typer.Option("--gpu/--cpu", help="One GPU per worker (NCCL) or CPUs (gloo).")]
Resume = Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --out.")]
LoaderWorkers = Annotated[int, typer.Option(help="DataLoader processes decoding shards per worker.", min=0)]
Threads = Annotated[Optional[int], typer.Option(help="torch CPU threads per worker (default: torch's).", min=1)]
Address = Annotated[Optional[str], typer.Option(help="Ray cluster address for --workers > 1 (default: local Ray).")]
