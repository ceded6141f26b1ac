"""Audio2Mesh and Audio2Pose trainers on cached wav2vec2 features streamed from the shards.

The heads train on the shards' ``wav2vec.npy`` (the wav2vec2 inside the official
checkpoints is frozen and is not part of our checkpoints: attach one at inference).

- **audio2mesh**: ``Audio2MeshModel.head(features)`` -> mesh offsets, L1 against
  :mod:`~pipelines.training.windows`' offsets on face frames.
- **audio2pose**: ``Audio2PoseModel.head(features, id_index, shift_poses(pose))`` (teacher
  forcing) -> poses, L1 on face frames; evaluated free-running (``generate``). The targets are
  full relative poses, so the checkpoint records a rotation scale of 1.0 for inference (the
  official files play at 0.5) and the smoothing window ``pose_smooth`` in its
  ``config["inference"]`` (:class:`pipelines.inference.conventions.PosePostprocess`).

The features are the clip's whole-utterance wav2vec2 pass sliced into windows; inference
encodes a whole utterance once and slices it into chunks the same way
(:meth:`models.audio2pose.Audio2PoseModel.infer`).

AdamW, gradient-norm clipping, one batch of (at most) ``batch_size`` windows per rank and
step, collated by the stream's DataLoader workers (an epoch's last batch may be short).
:class:`Audio2LmkTask` is the trainer's part of :mod:`pipelines.training.loop`, which runs
the steps, resume, logs and checkpoints. Rank 0 writes, under ``out``: ``config.json``,
``train.csv`` (step, epoch, loss, lr, windows/s), ``eval.csv`` (at each checkpoint when eval
shards are given), TensorBoard events under ``tb/`` and ``checkpoints/step-N.pt`` every
``checkpoint_every`` steps and at the end (layout: :mod:`pipelines.training.checkpoint`; the
head's state dict under ``models[kind]``). ``resume`` continues from the newest checkpoint
exactly: the same data, dropout masks and losses as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aniportrait.format import WAV2VEC, read_array
from aniportrait.pose import pose6d_to_matrix
from models.audio2lmk import TeacherForcedHead
from models.audio2mesh import Audio2MeshModel
from models.audio2pose import Audio2PoseModel
from models.official_weights import load_into
from pipelines.inference.conventions import TRAINED_POSTPROCESS
from pipelines.training.distributed import wrap_ddp
from pipelines.training.loop import TrainResult, TrainTask, Worker, launch, run_loop
from pipelines.training.stream import ShardStream, StreamPosition, expand_shards
from pipelines.training.windows import LIP_VERTICES, MEMBERS, NUM_IDS, Audio2LmkWindows

KINDS = ("audio2mesh", "audio2pose")
PRESETS = ("tiny", "official")
MODELS: dict[str, type[Audio2MeshModel] | type[Audio2PoseModel]] = {"audio2mesh": Audio2MeshModel,
                                                                    "audio2pose": Audio2PoseModel}
#: The window field each kind is trained to predict.
TARGETS = {"audio2mesh": "mesh_offset", "audio2pose": "pose"}
EVAL_FIELDS = {"audio2mesh": ("l1", "mean_vertex_error", "lip_vertex_error"),
               "audio2pose": ("l1", "rotation_error_deg", "translation_error")}


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
    #: audio2pose: the smoothing window (frames) inference applies to this model's poses, recorded
    #: in the checkpoints with the rotation scale 1.0 of its full-amplitude targets
    pose_smooth: int = TRAINED_POSTPROCESS.smooth
    #: values of the model config to change after the preset (e.g. ``{"layers": 4}``)
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
        for name in ("steps", "batch_size", "checkpoint_every", "log_every", "eval_windows", "workers", "pose_smooth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Audio2LmkTrainConfig:
        return cls(**values)


# ---------------------------------------------------------------- models and losses

def model_config(cfg: Audio2LmkTrainConfig, audio_dim: int) -> dict[str, Any]:
    """The head's config: the preset (``tiny`` sized to the features), overrides, no wav2vec2 inside."""
    model_cls = MODELS[cfg.kind]
    preset = model_cls.tiny_config(audio_dim) if cfg.model == "tiny" else model_cls.official_config()
    unknown = set(cfg.model_overrides) - set(preset)
    if unknown:
        raise ValueError(f"unknown {cfg.kind} config field(s): {', '.join(sorted(unknown))}")
    config = {**preset, **cfg.model_overrides, "wav2vec2": None}
    if config["audio_dim"] != audio_dim:
        raise ValueError(f"the {cfg.model} {cfg.kind} config takes {config['audio_dim']}-d audio features but the "
                         f"shards hold {audio_dim}-d wav2vec.npy (build them with the matching wav2vec2, or use "
                         f"--config tiny)")
    if cfg.kind == "audio2pose" and cfg.window > config["max_len"]:
        raise ValueError(f"window {cfg.window} exceeds the pose model's {config['max_len']} positions")
    return config


def build_model(kind: str, config: dict[str, Any]) -> Audio2MeshModel | Audio2PoseModel:
    """A randomly initialised head of ``kind`` with ``config`` (see :func:`model_config`)."""
    return MODELS[kind](**config)


def forced_prediction(head: nn.Module, kind: str,
                      batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prediction, target, mask)`` of a batch of windows through a :class:`TeacherForcedHead`."""
    return head(batch["features"], batch["id_index"], batch["pose"]), batch[TARGETS[kind]], batch["mask"]


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the frames where ``mask`` (B, T) is 1."""
    weight = mask.reshape(mask.shape + (1,) * (prediction.dim() - mask.dim()))
    per_frame = math.prod(prediction.shape[mask.dim():])
    return ((prediction - target).abs() * weight).sum() / (mask.sum() * per_frame).clamp_min(1.0)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------- data

def _feature_dim(sample: dict[str, Any]) -> list[int]:
    return [int(read_array(sample, WAV2VEC).shape[1])]


def feature_dim(shards: list[str]) -> int:
    """The width of the shards' cached ``wav2vec.npy`` features (read from the first sample)."""
    stream = ShardStream(shards[:1], _feature_dim, seed=0, shuffle_buffer=1, epochs=1, members={WAV2VEC.name})
    for dim in stream:
        return int(dim)
    raise ValueError(f"{shards[0]} holds no sample")


def windows_decoder(cfg: Audio2LmkTrainConfig, mcfg: dict[str, Any]) -> Audio2LmkWindows:
    """The windows of ``cfg``, with identities hashed into the model's ``num_ids`` rows (pose)."""
    return Audio2LmkWindows(cfg.window, cfg.stride, num_ids=mcfg.get("num_ids", NUM_IDS))


def training_stream(cfg: Audio2LmkTrainConfig, decoder: Audio2LmkWindows, rank: int, world: int,
                    position: StreamPosition) -> ShardStream:
    return ShardStream(cfg.shards, decoder, seed=cfg.seed,
                       shuffle_buffer=cfg.shuffle_buffer, rank=rank, world_size=world, position=position,
                       num_workers=cfg.loader_workers, members=MEMBERS, batch_size=cfg.batch_size)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(kind: str, model: Audio2MeshModel | Audio2PoseModel, shards: list[str], cfg: Audio2LmkTrainConfig,
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
    head = TeacherForcedHead(model)
    items = iter(stream)
    remaining = cfg.eval_windows
    while remaining > 0 and (chunk := [x for _, x in zip(range(min(remaining, cfg.batch_size)), items)]):
        remaining -= len(chunk)
        batch = to_device(torch.utils.data.default_collate(chunk), device)
        prediction, target, mask = forced_prediction(head, kind, batch)
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


# ---------------------------------------------------------------- the trainer's part of the loop

class Audio2LmkTask(TrainTask):
    """One rank's head, optimizer and windows for :func:`~pipelines.training.loop.run_loop`."""

    unit = "windows"

    def __init__(self, cfg: Audio2LmkTrainConfig, worker: Worker) -> None:
        self.cfg, self.worker = cfg, worker
        self.kind = cfg.kind
        self.model_config = model_config(cfg, feature_dim(cfg.shards))
        self.model = build_model(cfg.kind, self.model_config).to(worker.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.head = wrap_ddp(TeacherForcedHead(self.model), worker.device)
        self.decoder = windows_decoder(cfg, self.model_config)
        self.eval_fields = EVAL_FIELDS[cfg.kind] if cfg.eval_shards else ()
        if cfg.kind == "audio2pose":
            self.inference = TRAINED_POSTPROCESS.overridden(smooth=cfg.pose_smooth).to_dict()

    def model_states(self) -> dict[str, dict[str, torch.Tensor]]:
        return {self.kind: self.model.state_dict()}

    def load_model_states(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        load_into(self.model, states[self.kind], f"checkpoint {self.kind}")

    def open_stream(self, worker: Worker, position: StreamPosition) -> ShardStream:
        return training_stream(self.cfg, self.decoder, worker.rank, worker.world, position)

    def train_step(self, batch: dict[str, Any], step: int) -> float:
        prediction, target, mask = forced_prediction(self.head, self.kind, to_device(batch, self.worker.device))
        loss = masked_l1(prediction, target, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.head.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss.item()

    def items_in(self, batch: dict[str, Any]) -> int:
        return len(batch["mask"])

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.kind, self.model, self.cfg.eval_shards, self.cfg, self.decoder, self.worker.device)


def train_loop(config: dict[str, Any]) -> None:
    """One rank's training (what :func:`~pipelines.training.distributed.run_training` runs on every worker)."""
    run_loop(Audio2LmkTrainConfig.from_dict(config), Audio2LmkTask)


def train(cfg: Audio2LmkTrainConfig, *, ray_address: str | None = None) -> TrainResult:
    """Run the training ``cfg`` describes (in this process, or on ``cfg.workers`` Ray Train
    workers) and return what it left in ``cfg.out``."""
    cfg = dataclasses.replace(cfg, shards=expand_shards(cfg.shards), out=str(Path(cfg.out).resolve()),
                              eval_shards=expand_shards(cfg.eval_shards) if cfg.eval_shards else [])
    return launch(train_loop, cfg, name=cfg.kind, ray_address=ray_address)
