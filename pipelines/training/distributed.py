"""Run a training loop in this process, or on N data-parallel workers with Ray Train.

A loop is a function of one config dict (the trainers' ``train_loop``, which hands it to
:func:`pipelines.training.loop.run_loop`). It asks :func:`rank_and_world` who it is (from
``torch.distributed``, which Ray Train's ``TorchTrainer`` sets up: gloo on CPU, NCCL on
GPU), reads its share of the shards with ``ShardStream(rank=, world_size=)``, wraps its
model with :func:`wrap_ddp` and lets rank 0 write checkpoints and logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside ``torch.distributed``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def select_device(use_gpu: bool):
    """The torch device of this worker: CPU, or its GPU (Ray Train's choice under Ray)."""
    import torch

    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("a GPU was asked for (--gpu) but torch sees no CUDA device")
    if rank_and_world()[1] > 1:
        from ray.train.torch import get_device

        return get_device()
    return torch.device("cuda")


def wrap_ddp(model, device, *, find_unused_parameters: bool = False):
    """``model`` on ``device``, wrapped in ``DistributedDataParallel`` when there are several ranks.

    ``find_unused_parameters``: some steps leave parameters without gradients (e.g. a
    dropped condition); DDP then has to look for them.
    """
    from torch.nn.parallel import DistributedDataParallel

    model = model.to(device)
    if rank_and_world()[1] == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` with one rank)."""
    import torch.distributed as dist

    world = rank_and_world()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: float) -> float:
    """The mean of ``value`` over all ranks (``value`` itself with one rank); every rank must call it."""
    import torch
    import torch.distributed as dist

    world = rank_and_world()[1]
    if world == 1:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / world


def run_training(train_loop: Callable[[dict], None], config: dict, workers: int, use_gpu: bool, *,
                 storage_path: str | Path | None = None, name: str = "train",
                 ray_address: str | None = None) -> None:
    """Run ``train_loop(config)``: in this process with 1 worker, else on ``workers`` Ray
    Train workers (``TorchTrainer``, one CPU each or one GPU each with ``use_gpu``).

    ``train_loop`` must be a module-level (picklable) function. Ray is started locally
    unless it is running or ``ray_address`` names a cluster; Ray Train keeps its run
    state under ``storage_path`` (default ``~/ray_results``), which must be shared by all
    nodes on a cluster. A failing worker raises here with the worker's error.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        train_loop(config)
        return
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=True)
    trainer = TorchTrainer(
        train_loop, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=str(Path(storage_path).resolve()) if storage_path else None))
    result = trainer.fit()
    if result.error is not None:
        raise result.error
