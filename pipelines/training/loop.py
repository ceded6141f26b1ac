"""The one training loop of every trainer: steps, resume, logs and checkpoints around a task.

A trainer supplies a config (:class:`LoopConfig`: the run's folder, steps, cadences, seed,
workers) and a :class:`TrainTask`: its models, optimizer, one step, its data stream, and
optionally an evaluation, output files and extra resume state. The rest is here:

- :func:`run_loop`, on every rank: torch threads, rank and device, the same initial weights
  on every rank (``seed``) then per-rank random draws (``seed * 1000 + rank + 1``); resume
  from the newest complete checkpoint (its ``kind`` and model config must equal the run's);
  the step loop (a non-finite loss stops it); every ``log_every`` steps the loss and
  throughput averaged over the ranks in ``train.csv``/TensorBoard (rank 0); every
  ``checkpoint_every`` steps and at the end every rank's stream position and rng state
  gathered and, on rank 0, the checkpoint (:mod:`pipelines.training.checkpoint`), the task's
  output files, pruning and the evaluation (``eval.csv``).
- Resume on another number of ranks: the ranks' shares of the data differ, so the data
  restarts at the epoch after the one the slowest rank was in, and the rng states are not
  restored (:func:`resume_position`); at the same number of ranks it continues exactly.
- :func:`launch`, in the driver: refuses an ``out`` holding checkpoints without ``resume``,
  runs the loop here or on Ray Train workers (:func:`~pipelines.training.distributed.run_training`)
  and returns the run's :class:`TrainResult`.

Wrapping a model in DistributedDataParallel stays with the task
(:func:`~pipelines.training.distributed.wrap_ddp`): only it knows which module's ``forward``
is the training computation.
"""

from __future__ import annotations

import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from aniportrait.storage import write_local_atomic
from pipelines.training.checkpoint import (TrainerCheckpoint, checkpoint_path, checkpoint_step, latest_checkpoint,
                                           list_checkpoints, prune_checkpoints, read_checkpoint, save_checkpoint)
from pipelines.training.distributed import (gather_objects, mean_across_ranks, rank_and_world, run_training,
                                            select_device)
from pipelines.training.logs import EVAL_LOG, TRAIN_LOG, CsvLog, RunLogs
from pipelines.training.stream import StreamPosition

log = logging.getLogger(__name__)

#: The run's configs as JSON, written by rank 0 at the start (:func:`run_configs`).
CONFIG_FILE = "config.json"


class LoopConfig(Protocol):
    """The fields of a trainer config the loop reads (both trainer configs have them)."""

    out: str
    steps: int
    seed: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    resume: bool
    workers: int
    use_gpu: bool
    threads: int | None
    progress: bool

    def to_dict(self) -> dict[str, Any]: ...


class PositionedStream(Protocol):
    """Batches, and where the stream is after the last one (saved in checkpoints)."""

    position: StreamPosition

    def __iter__(self) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Worker:
    """This process among the data-parallel ranks, and its torch device."""

    rank: int
    world: int
    device: torch.device

    @property
    def lead(self) -> bool:
        """Rank 0: the one that writes logs, checkpoints and outputs."""
        return self.rank == 0


class TrainTask(ABC):
    """What one trainer supplies to :func:`run_loop` on one rank.

    Attributes: ``kind`` (the checkpoint's kind), ``unit`` (what :meth:`items_in` counts, for
    ``train.csv``'s ``<unit>_per_s``), ``model_config`` (saved and compared on resume),
    ``inference`` (the conventions inference must follow with these weights, e.g. the pose
    feed or the head-pose scale; saved as the checkpoint's ``config["inference"]``),
    ``optimizer``, ``eval_fields`` (the metrics :meth:`evaluate` returns; empty: no evaluation)
    and ``divergence_hint`` (said when the loss is not finite).
    """

    kind: str
    unit: str
    model_config: dict[str, Any]
    optimizer: torch.optim.Optimizer
    inference: dict[str, Any] = {}
    eval_fields: tuple[str, ...] = ()
    divergence_hint: str = "lower --lr"

    @abstractmethod
    def model_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """The trained modules' state dicts by name (the checkpoint's ``models``)."""

    @abstractmethod
    def load_model_states(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Load what :meth:`model_states` returned."""

    def extra_state(self) -> dict[str, Any]:
        """Anything else a resume needs (the checkpoint's ``extra``)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Load what :meth:`extra_state` returned."""

    @abstractmethod
    def open_stream(self, worker: Worker, position: StreamPosition) -> PositionedStream:
        """This rank's training batches from ``position`` on, endless."""

    @abstractmethod
    def train_step(self, batch: Any, step: int) -> float:
        """One optimizer step on ``batch`` (``step``: steps done before it); returns the loss."""

    @abstractmethod
    def items_in(self, batch: Any) -> int:
        """How many items (windows, samples) ``batch`` holds."""

    def evaluate(self) -> dict[str, float]:
        """Metrics named as ``eval_fields`` (rank 0, after each checkpoint)."""
        return {}

    def write_outputs(self, out: Path) -> None:
        """Files to refresh next to each checkpoint (rank 0), e.g. the models in a release layout."""


@dataclass
class TrainResult:
    """What a finished run left in its folder."""

    step: int
    checkpoint: Path
    #: (step, mean training loss since the previous row) as logged
    losses: list[tuple[int, float]]
    #: the last evaluation's metrics (empty without evaluation)
    eval: dict[str, float]


def rng_state(use_gpu: bool) -> dict[str, torch.Tensor]:
    """This process's torch rng state (and its GPU's)."""
    state = {"torch": torch.get_rng_state()}
    if use_gpu:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def resume_position(positions: list[dict[str, int]], worker: Worker, source: str) -> StreamPosition:
    """Where this rank's stream resumes: its saved position when the world size is the same,
    else the start of the epoch after the lowest one saved (with a warning)."""
    saved = [StreamPosition.from_dict(p) for p in positions]
    if len(saved) == worker.world:
        return saved[worker.rank]
    epoch = min(p.epoch for p in saved) + 1
    if worker.lead:
        log.warning("checkpoint %s was written by %d ranks, this run has %d: data restarts at epoch %d",
                    source, len(saved), worker.world, epoch)
    return StreamPosition(epoch, 0)


def _resume(task: TrainTask, config: LoopConfig, worker: Worker) -> tuple[int, StreamPosition]:
    """Load the newest checkpoint into ``task``; returns ``(step, stream position)``."""
    found = latest_checkpoint(config.out) if config.resume else None
    if found is None:
        return 0, StreamPosition()
    checkpoint = read_checkpoint(found)
    if checkpoint.kind != task.kind:
        raise ValueError(f"{found} is a {checkpoint.kind} checkpoint, not {task.kind}: use another --out")
    saved = checkpoint.config.get("model")
    if saved != task.model_config:
        raise ValueError(f"{found} holds another model config ({saved}) than this run ({task.model_config}); "
                         f"use the same --config or a new --out")
    task.load_model_states(checkpoint.models)
    task.optimizer.load_state_dict(checkpoint.optimizer)
    task.load_extra_state(checkpoint.extra)
    position = resume_position(checkpoint.stream, worker, str(found))
    if len(checkpoint.stream) == len(checkpoint.rng) == worker.world:
        rng = checkpoint.rng[worker.rank]
        torch.set_rng_state(rng["torch"])
        if config.use_gpu and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"])
    if worker.lead:
        log.info("resuming from %s (step %d)", found, checkpoint.step)
    return checkpoint.step, position


def run_configs(config: LoopConfig, task: TrainTask) -> dict[str, dict[str, Any]]:
    """What ``config.json`` and every checkpoint's ``config`` hold: ``{"train", "model", "inference"}``."""
    return {"train": config.to_dict(), "model": task.model_config, "inference": dict(task.inference)}


def _save(task: TrainTask, config: LoopConfig, worker: Worker, stream: PositionedStream, step: int,
          logs: RunLogs | None) -> None:
    """Every rank: gather positions and rng states; rank 0: checkpoint, outputs, pruning, evaluation."""
    positions = gather_objects(stream.position.to_dict())
    rngs = gather_objects(rng_state(config.use_gpu))
    if logs is None:
        return
    out = Path(config.out)
    checkpoint = TrainerCheckpoint(kind=task.kind, step=step, models=task.model_states(),
                                   optimizer=task.optimizer.state_dict(), stream=positions, rng=rngs,
                                   config=run_configs(config, task), extra=task.extra_state())
    save_checkpoint(checkpoint_path(out, step), checkpoint.to_dict())
    task.write_outputs(out)
    prune_checkpoints(out, config.keep_checkpoints)
    if logs.evaluating:
        logs.eval(step, task.evaluate())


def run_loop(config: LoopConfig, build: Callable[[Any, Worker], TrainTask]) -> None:
    """One rank's training: ``build(config, worker)`` makes the task, then the loop runs it to ``config.steps``."""
    from tqdm.auto import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world = rank_and_world()
    worker = Worker(rank, world, select_device(config.use_gpu))
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    task = build(config, worker)
    torch.manual_seed(config.seed * 1_000 + rank + 1)  # per-rank random draws (dropout masks)
    step, position = _resume(task, config, worker)
    out = Path(config.out)
    logs = None
    if worker.lead:
        out.mkdir(parents=True, exist_ok=True)
        write_local_atomic(out / CONFIG_FILE, json.dumps(run_configs(config, task), indent=2).encode())
        logs = RunLogs(out, task.unit, task.eval_fields, step)
    stream = task.open_stream(worker, position)
    progress = tqdm(total=config.steps, initial=step, desc=task.kind, disable=not (worker.lead and config.progress),
                    unit="step")
    batch_iter = iter(stream)
    losses: list[float] = []
    items, started = 0, time.perf_counter()
    try:
        while step < config.steps:
            batch = next(batch_iter)
            loss = task.train_step(batch, step)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the {task.kind} loss is {loss} at step {step + 1}: {task.divergence_hint}")
            step += 1
            losses.append(loss)
            items += task.items_in(batch)
            progress.update(1)
            if step % config.log_every == 0 or step == config.steps:
                mean_loss = mean_across_ranks(sum(losses) / len(losses))
                seconds = time.perf_counter() - started
                rate = mean_across_ranks(items / seconds) * world
                if logs is not None:
                    logs.train(step, stream.position.epoch, mean_loss, task.optimizer.param_groups[0]["lr"], rate,
                               seconds)
                    progress.set_postfix(loss=f"{mean_loss:.4g}")
                losses, items, started = [], 0, time.perf_counter()
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save(task, config, worker, stream, step, logs)
    finally:
        progress.close()
        if logs is not None:
            logs.close()


def launch(train_loop: Callable[[dict[str, Any]], None], config: LoopConfig, *, name: str,
           ray_address: str | None = None) -> TrainResult:
    """Run ``train_loop(config.to_dict())`` here or on ``config.workers`` Ray Train workers
    (Ray Train's run state under ``<out>/ray``) and return what it left in ``config.out``.

    ``config.out`` should be absolute (workers may run elsewhere); one already holding
    checkpoints needs ``config.resume``.
    """
    out = Path(config.out)
    if not config.resume and list_checkpoints(out):
        raise ValueError(f"{out} already holds checkpoints: pass --resume to continue, or another --out")
    run_training(train_loop, config.to_dict(), config.workers, config.use_gpu, storage_path=out / "ray", name=name,
                 ray_address=ray_address)
    return read_result(out)


def read_result(out: str | Path) -> TrainResult:
    """The newest checkpoint, logged losses and last evaluation of a run folder."""
    out = Path(out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        raise FileNotFoundError(f"{out} holds no checkpoint")
    losses = [(int(r["step"]), float(r["loss"])) for r in CsvLog.read(out / TRAIN_LOG)]
    evals = CsvLog.read(out / EVAL_LOG) if (out / EVAL_LOG).exists() else []
    last = {k: float(v) for k, v in evals[-1].items() if k != "step"} if evals else {}
    return TrainResult(step=checkpoint_step(checkpoint), checkpoint=checkpoint, losses=losses, eval=last)
