"""Training logs of a run folder: ``train.csv``, ``eval.csv`` and TensorBoard events under ``tb/``.

CSV files are append-only and a resume trims them back to its checkpoint's step (the rows
after it get redone); TensorBoard purges the events after that step the same way.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from aniportrait.storage import write_local_atomic

TRAIN_LOG, EVAL_LOG, TENSORBOARD_DIR = "train.csv", "eval.csv", "tb"


class CsvLog:
    """Append-only CSV; on resume rows after the checkpoint's step are dropped (they get redone)."""

    def __init__(self, path: Path, fields: tuple[str, ...] | list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, list(fields)
        rows = self.read(path) if keep_until is not None and path.exists() else []
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["step"]) <= (keep_until or 0))
        write_local_atomic(path, buffer.getvalue().encode())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.fields, extrasaction="ignore").writerow(row)

    @staticmethod
    def read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))


class RunLogs:
    """Rank 0's logs from ``step`` on: ``train.csv`` (step, epoch, loss, lr, ``<unit>_per_s``,
    seconds), ``eval.csv`` (step and ``eval_fields``; only when there are some) and TensorBoard
    scalars ``train/*`` and ``eval/*`` (when tensorboardX is installed)."""

    def __init__(self, out: Path, unit: str, eval_fields: tuple[str, ...], step: int) -> None:
        self.rate = f"{unit}_per_s"
        self.train_csv = CsvLog(out / TRAIN_LOG, ("step", "epoch", "loss", "lr", self.rate, "seconds"), keep_until=step)
        self.eval_csv = CsvLog(out / EVAL_LOG, ("step", *eval_fields), keep_until=step) if eval_fields else None
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            self.board = None
        else:
            self.board = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=step or None)

    @property
    def evaluating(self) -> bool:
        return self.eval_csv is not None

    def train(self, step: int, epoch: int, loss: float, lr: float, rate: float, seconds: float) -> None:
        self.train_csv.write({"step": step, "epoch": epoch, "loss": f"{loss:.6g}", "lr": lr, self.rate: f"{rate:.4g}",
                              "seconds": f"{seconds:.4g}"})
        if self.board is not None:
            self.board.add_scalar("train/loss", loss, step)
            self.board.add_scalar(f"train/{self.rate}", rate, step)

    def eval(self, step: int, metrics: dict[str, float]) -> None:
        if self.eval_csv is None:
            raise RuntimeError("this run logs no evaluation (no eval fields)")
        self.eval_csv.write({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        if self.board is not None:
            for name, value in metrics.items():
                self.board.add_scalar(f"eval/{name}", value, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
