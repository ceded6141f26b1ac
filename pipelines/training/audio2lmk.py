"""Audio2Mesh and Audio2Pose trainers on cached wav2vec2 features streamed from the shards.

The heads train on the shards' ``wav2vec.npy`` (the wav2vec2 inside the official
checkpoints is frozen and is not part of our checkpoints: attach one at inference).

- **audio2mesh**: ``Audio2MeshModel.head(features)`` -> mesh offsets, L1 against
  :mod:`~pipelines.training.windows`' offsets on face frames.
- **audio2pose**: ``Audio2PoseModel.head(features, id_index, shift_poses(pose))`` (teacher
  forcing) -> poses, L1 on face frames; evaluated free-running (``generate``).

AdamW, gradient-norm clipping, one batch of (at most) ``batch_size`` windows per rank and
step, collated by the stream's DataLoader workers (an epoch's last batch may be short).
Rank 0 writes, under ``out``: ``config.json``, ``train.csv`` (step, epoch, loss, lr,
windows/s), ``eval.csv`` (at each checkpoint when eval shards are given), TensorBoard
events under ``tb/`` (tensorboardX) and ``checkpoints/step-N.pt`` every
``checkpoint_every`` steps and at the end (model, optimizer, step, every rank's stream
position and torch rng state, configs). ``resume`` continues from the newest checkpoint
exactly: the same data, dropout masks and losses as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aniportrait.pose import pose6d_to_matrix
from aniportrait.storage import write_local_atomic
from pipelines.training.logs import CsvLog
from pipelines.training.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint,
                                           prune_checkpoints, save_checkpoint)
from pipelines.training.distributed import (gather_objects, mean_across_ranks, rank_and_world, run_training,
                                            select_device, unwrap, wrap_ddp)
from pipelines.training.stream import ShardStream, StreamPosition, expand_shards
from pipelines.training.windows import LIP_VERTICES, MEMBERS, NUM_IDS, Audio2LmkWindows

log = logging.getLogger(__name__)

KINDS = ("audio2mesh", "audio2pose")
PRESETS = ("tiny", "official")
TRAIN_FIELDS = ("step", "epoch", "loss", "lr", "windows_per_s", "seconds")
EVAL_FIELDS = {"audio2mesh": ("step", "l1", "mean_vertex_error", "lip_vertex_error"),
               "audio2pose": ("step", "l1", "rotation_error_deg", "translation_error")}


@dataclass
class Audio2LmkTrainConfig:
    """Everything a run needs; saved in ``config.json`` and in every checkpoint."""

    kind: str
    shards: list[str]
    out: str
    steps: int = 1000
    batch_size: int = 8
    window: int = 60
    stride: int | None = None
    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    seed: int = 0
    shuffle_buffer: int = 256
    model: str = "tiny"
    #: fields of the model config to change after the preset (e.g. ``{"layers": 4}``)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    eval_shards: list[str] = field(default_factory=list)
    eval_windows: int = 64
    log_every: int = 10
    loader_workers: int = 0
    workers: int = 1
    use_gpu: bool = False
    #: torch intra-op threads per worker (None: torch's default; 1 is far faster on a busy CPU)
    threads: int | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.model not in PRESETS:
            raise ValueError(f"model config must be one of {', '.join(PRESETS)}, got {self.model!r}")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "eval_windows", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Audio2LmkTrainConfig:
        return cls(**values)


@dataclass
class TrainResult:
    """What a finished run left in ``out``."""

    step: int
    checkpoint: Path
    #: (step, mean training loss since the previous row) as logged
    losses: list[tuple[int, float]]
    #: the last evaluation's metrics (empty without eval shards)
    eval: dict[str, float]


# ---------------------------------------------------------------- models and losses

def model_config(cfg: Audio2LmkTrainConfig, audio_dim: int):
    """The head's config: the preset (``tiny`` sized to the features), overrides, no wav2vec2 inside."""
    if cfg.kind == "audio2mesh":
        from models.audio2mesh import Audio2MeshConfig as Config
    else:
        from models.audio2pose import Audio2PoseConfig as Config
    config = Config.tiny(audio_dim) if cfg.model == "tiny" else Config.official()
    unknown = set(cfg.model_overrides) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"unknown {cfg.kind} config field(s): {', '.join(sorted(unknown))}")
    config = dataclasses.replace(config, **cfg.model_overrides, wav2vec2=None)
    if config.audio_dim != audio_dim:
        raise ValueError(f"the {cfg.model} {cfg.kind} config takes {config.audio_dim}-d audio features but the shards "
                         f"hold {audio_dim}-d wav2vec.npy (build them with the matching wav2vec2, or use --config tiny)")
    if cfg.kind == "audio2pose" and cfg.window > config.max_len:
        raise ValueError(f"window {cfg.window} exceeds the pose model's {config.max_len} positions")
    return config


def build_model(kind: str, config) -> nn.Module:
    if kind == "audio2mesh":
        from models.audio2mesh import Audio2MeshModel

        return Audio2MeshModel(config)
    from models.audio2pose import Audio2PoseModel

    return Audio2PoseModel(config)


class TeacherForcedHead(nn.Module):
    """``forward(batch) -> (prediction, target, mask)`` through the model's ``head``, so that
    DistributedDataParallel (which hooks ``forward``) sees the training computation."""

    def __init__(self, kind: str, model: nn.Module) -> None:
        super().__init__()
        self.kind = kind
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.kind == "audio2mesh":
            return self.model.head(batch["features"]), batch["mesh_offset"], batch["mask"]
        from models.audio2pose import shift_poses

        poses = self.model.head(batch["features"], batch["id_index"], shift_poses(batch["pose"]))
        return poses, batch["pose"], batch["mask"]


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the frames where ``mask`` (B, T) is 1."""
    weight = mask.reshape(mask.shape + (1,) * (prediction.dim() - mask.dim()))
    per_frame = math.prod(prediction.shape[mask.dim():])
    return ((prediction - target).abs() * weight).sum() / (mask.sum() * per_frame).clamp_min(1.0)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------- data

def _feature_dim(sample: dict[str, Any]) -> list[int]:
    return [int(np.load(io.BytesIO(sample["wav2vec.npy"])).shape[1])]


def feature_dim(shards: list[str]) -> int:
    """The width of the shards' cached ``wav2vec.npy`` features (read from the first sample)."""
    stream = ShardStream(shards[:1], _feature_dim, seed=0, shuffle_buffer=1, epochs=1, members={"wav2vec.npy"})
    for dim in stream:
        return int(dim)
    raise ValueError(f"{shards[0]} holds no sample")


def windows_decoder(cfg: Audio2LmkTrainConfig, mcfg) -> Audio2LmkWindows:
    """The windows of ``cfg``, with identities hashed into the model's ``num_ids`` rows (pose)."""
    return Audio2LmkWindows(cfg.window, cfg.stride, num_ids=getattr(mcfg, "num_ids", NUM_IDS))


def training_stream(cfg: Audio2LmkTrainConfig, decoder: Audio2LmkWindows, rank: int, world: int,
                    position: StreamPosition) -> ShardStream:
    return ShardStream(cfg.shards, decoder, seed=cfg.seed,
                       shuffle_buffer=cfg.shuffle_buffer, rank=rank, world_size=world, position=position,
                       num_workers=cfg.loader_workers, members=MEMBERS, batch_size=cfg.batch_size)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(kind: str, model: nn.Module, shards: list[str], cfg: Audio2LmkTrainConfig,
             decoder: Audio2LmkWindows, device: torch.device) -> dict[str, float]:
    """Metrics over the first ``eval_windows`` windows of ``shards`` (unshuffled, in order).

    audio2mesh: ``l1``, ``mean_vertex_error`` (mean L2 distance per vertex, canonical mesh
    units = cm) and ``lip_vertex_error`` (per frame the largest L2 error over the 40 lip
    vertices, averaged over frames, as in VOCA/FaceFormer). audio2pose: ``l1`` (teacher
    forcing) and, free-running (``generate`` from a zero pose), ``rotation_error_deg``
    (geodesic angle) and ``translation_error`` (L2, cm). Face frames only.
    """
    stream = ShardStream(shards, decoder, seed=0, shuffle_buffer=1, epochs=1, members=MEMBERS)
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    frames = 0.0
    head = TeacherForcedHead(kind, model)
    items = iter(stream)
    remaining = cfg.eval_windows
    while remaining > 0 and (chunk := [x for _, x in zip(range(min(remaining, cfg.batch_size)), items)]):
        remaining -= len(chunk)
        batch = to_device(torch.utils.data.default_collate(chunk), device)
        prediction, target, mask = head(batch)
        count = float(mask.sum())
        frames += count
        metrics = {"l1": float(masked_l1(prediction, target, mask)) * count}
        if kind == "audio2mesh":
            error = (prediction - target).norm(dim=-1)  # (B, T, V)
            metrics["mean_vertex_error"] = float((error.mean(-1) * mask).sum())
            metrics["lip_vertex_error"] = float((error[..., list(LIP_VERTICES)].amax(-1) * mask).sum())
        else:
            free = model.generate(batch["features"], batch["id_index"], chunk=cfg.window)
            angle, shift = pose_errors(free.cpu().numpy(), target.cpu().numpy())
            keep = mask.cpu().numpy()
            metrics["rotation_error_deg"] = float((angle * keep).sum())
            metrics["translation_error"] = float((shift * keep).sum())
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value
    model.train(was_training)
    if frames == 0:
        raise ValueError(f"no evaluation window with a face in {', '.join(shards)}")
    return {name: value / frames for name, value in sums.items()}


def pose_errors(prediction: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame geodesic rotation angle (deg) and translation distance between 6D poses (..., 6)."""
    rp, rt = pose6d_to_matrix(prediction)[..., :3, :3], pose6d_to_matrix(target)[..., :3, :3]
    cos = (np.einsum("...ji,...ji->...", rp, rt) - 1.0) / 2.0  # trace(Rp^T Rt)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), np.linalg.norm(prediction[..., 3:] - target[..., 3:], axis=-1)


# ---------------------------------------------------------------- logs

def _tensorboard(out: Path, step: int):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"), purge_step=step or None)


# ---------------------------------------------------------------- the loop

def _check_resume(state: dict[str, Any], cfg: Audio2LmkTrainConfig, config_dict: dict[str, Any]) -> None:
    saved = state["config"]
    if saved["train"]["kind"] != cfg.kind:
        raise ValueError(f"the checkpoint in {cfg.out} is an {saved['train']['kind']} run, not {cfg.kind}")
    if saved["model"] != config_dict:
        raise ValueError(f"the checkpoint in {cfg.out} has another model config ({saved['model']}) than this run "
                         f"({config_dict}); use the same --config or a new --out")


def _rng_state(use_gpu: bool) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if use_gpu:
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def train_loop(config: dict[str, Any]) -> None:
    """One rank's training (what :func:`run_training` runs on every worker)."""
    cfg = Audio2LmkTrainConfig.from_dict(config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = rank_and_world()
    device = select_device(cfg.use_gpu)
    out = Path(cfg.out)
    mcfg = model_config(cfg, feature_dim(cfg.shards))
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.kind, mcfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed * 1_000 + rank + 1)  # per-rank dropout masks
    step, position = 0, StreamPosition()
    found = latest_checkpoint(out) if cfg.resume else None
    if found is not None:
        state = load_checkpoint(found)
        _check_resume(state, cfg, mcfg.to_dict())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        if len(state["stream"]) == world:
            position = StreamPosition.from_dict(state["stream"][rank])
            torch.set_rng_state(state["rng"][rank]["torch"])
            if cfg.use_gpu and "cuda" in state["rng"][rank]:
                torch.cuda.set_rng_state(state["rng"][rank]["cuda"])
        else:  # another world size: the ranks' shares differ, so restart the epoch reached
            position = StreamPosition(min(StreamPosition.from_dict(p).epoch for p in state["stream"]) + 1, 0)
            log.warning("checkpoint %s was written by %d ranks, this run has %d: data restarts at epoch %d",
                        found, len(state["stream"]), world, position.epoch)
        if rank == 0:
            log.info("resuming from %s (step %d)", found, step)
    head = wrap_ddp(TeacherForcedHead(cfg.kind, model), device)
    decoder = windows_decoder(cfg, mcfg)
    stream = training_stream(cfg, decoder, rank, world, position)
    lead = rank == 0
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        write_local_atomic(out / "config.json", json.dumps({"train": cfg.to_dict(), "model": mcfg.to_dict()},
                                                           indent=2).encode())
        train_csv = CsvLog(out / "train.csv", TRAIN_FIELDS, keep_until=step)
        eval_csv = CsvLog(out / "eval.csv", EVAL_FIELDS[cfg.kind], keep_until=step) if cfg.eval_shards else None
        board = _tensorboard(out, step)
    from tqdm import tqdm

    progress = tqdm(total=cfg.steps, initial=step, desc=cfg.kind, disable=not (lead and cfg.progress), unit="step")
    batch_iter = iter(stream)
    losses: list[float] = []
    windows, started = 0, time.perf_counter()
    while step < cfg.steps:
        batch = to_device(next(batch_iter), device)
        prediction, target, mask = head(batch)
        loss = masked_l1(prediction, target, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        losses.append(loss.item())
        windows += len(batch["mask"])
        progress.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = mean_across_ranks(sum(losses) / len(losses))
            seconds = time.perf_counter() - started
            rate = mean_across_ranks(windows / seconds) * world
            if lead:
                row = {"step": step, "epoch": stream.position.epoch, "loss": f"{mean_loss:.6g}",
                       "lr": optimizer.param_groups[0]["lr"], "windows_per_s": f"{rate:.4g}", "seconds": f"{seconds:.4g}"}
                train_csv.write(row)
                progress.set_postfix(loss=f"{mean_loss:.4g}")
                if board is not None:
                    board.add_scalar("train/loss", mean_loss, step)
                    board.add_scalar("train/windows_per_s", rate, step)
            losses, windows, started = [], 0, time.perf_counter()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            positions = gather_objects(stream.position.to_dict())
            rngs = gather_objects(_rng_state(cfg.use_gpu))
            if lead:
                save_checkpoint(checkpoint_path(out, step), {
                    "kind": cfg.kind, "step": step, "model": unwrap(head).model.state_dict(),
                    "optimizer": optimizer.state_dict(), "stream": positions, "rng": rngs,
                    "config": {"model": mcfg.to_dict(), "train": cfg.to_dict()}})
                prune_checkpoints(out, cfg.keep_checkpoints)
                if eval_csv is not None:
                    metrics = evaluate(cfg.kind, model, cfg.eval_shards, cfg, decoder, device)
                    eval_csv.write({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
                    if board is not None:
                        for name, value in metrics.items():
                            board.add_scalar(f"eval/{name}", value, step)
    progress.close()
    if lead and board is not None:
        board.close()


def train(cfg: Audio2LmkTrainConfig, *, ray_address: str | None = None) -> TrainResult:
    """Run the training ``cfg`` describes (in this process, or on ``cfg.workers`` Ray Train
    workers) and return what it left in ``cfg.out``."""
    cfg = dataclasses.replace(cfg, shards=expand_shards(cfg.shards),
                              eval_shards=expand_shards(cfg.eval_shards) if cfg.eval_shards else [])
    out = Path(cfg.out).resolve()
    cfg = dataclasses.replace(cfg, out=str(out))
    if not cfg.resume and list_checkpoints(out):
        raise ValueError(f"{out} already holds checkpoints: pass --resume to continue, or another --out")
    run_training(train_loop, cfg.to_dict(), cfg.workers, cfg.use_gpu, storage_path=out / "ray",
                 name=cfg.kind, ray_address=ray_address)
    return read_result(out)


def read_result(out: str | Path) -> TrainResult:
    """The newest checkpoint, logged losses and last evaluation of a run folder."""
    out = Path(out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        raise FileNotFoundError(f"{out} holds no checkpoint")
    losses = [(int(r["step"]), float(r["loss"])) for r in CsvLog.read(out / "train.csv")]
    evals = CsvLog.read(out / "eval.csv") if (out / "eval.csv").exists() else []
    last = {k: float(v) for k, v in evals[-1].items() if k != "step"} if evals else {}
    step = int(checkpoint.stem.split("-")[1])
    return TrainResult(step=step, checkpoint=checkpoint, losses=losses, eval=last)
