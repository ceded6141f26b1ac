"""Training items of the Lmk2Video trainers, made from raw shard samples (``decode`` of a
:class:`~pipelines.training.stream.ShardStream`).

As the official dataset (``src/dataset/dataset_face.py``):

- stage 1: a target frame, a reference frame drawn independently from the same clip (it
  may be the same frame) and the target's pose image;
- stage 2: a 16-frame window, stride 1 or, with 50% chance, 4 (``linspace`` over
  ``min(length, 15 * stride + 1)`` frames from a random start), a reference frame from
  anywhere in the clip and the window's pose images.

Unlike the official code, only frames with a face are used (targets, references and
whole window spans); a clip without enough of them gives no item. Images are resized to
the training size and kept as uint8 ``(3, H, W)`` (``(F, 3, H, W)`` for windows) so that
shuffle buffers stay small; the trainer maps them to [-1, 1] on its device.

The random choices of a clip are seeded by ``(seed, epoch, clip key)``: each epoch draws
new frames and windows, and a stream replays the same items for the same epoch, which is
what makes a resumed run see exactly the items it skipped to.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aniportrait.format import VIDEO, member_bytes
from pipelines.training.frames import PoseSource, has_face, members_for, pose_frames, read_frames

#: Frames of a stage-2 window, its stride and the stride used with 50% chance (official).
WINDOW_FRAMES = 16
WINDOW_STRIDE = 1
WINDOW_STRIDE_AUG = 4


def window_indices(length: int, frames: int, stride: int, rng: random.Random,
                   starts: Sequence[int] | None = None) -> list[int]:
    """Frame indices of one window, as the official sampler: ``frames`` indices spread
    (``linspace``, truncated) over ``min(length, (frames - 1) * stride + 1)`` frames from a
    random start, taken from ``starts`` when given (else any start that fits)."""
    span = min(length, (frames - 1) * stride + 1)
    start = rng.choice(starts) if starts is not None else rng.randint(0, length - span)
    return np.linspace(start, start + span - 1, frames, dtype=int).tolist()


def face_starts(face: np.ndarray, span: int) -> list[int]:
    """Starts of the ``span``-frame runs in which every frame has a face."""
    if span > len(face):
        return []
    runs = np.convolve(face.astype(np.int64), np.ones(span, np.int64), mode="valid")
    return np.flatnonzero(runs == span).tolist()


def _chw(images: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) -> (..., 3, H, W), contiguous."""
    return np.ascontiguousarray(np.moveaxis(images, -1, -3))


@dataclass(frozen=True)
class SampleSettings:
    """What the decoders make: the training ``size`` (width, height), items per clip and
    per epoch (``per_clip``), where pose images come from, and the seed and epoch of the choices."""

    width: int
    height: int
    seed: int = 0
    per_clip: int = 1
    pose_source: PoseSource = "draw"
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.width % 8 or self.height % 8 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"the training size must be positive multiples of 8, got {self.width}x{self.height}")
        if self.per_clip < 1:
            raise ValueError(f"per_clip must be >= 1, got {self.per_clip}")
        members_for(self.pose_source)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def members(self) -> frozenset[str]:
        """The tar members the decoders read."""
        return members_for(self.pose_source)

    def rng(self, sample: dict[str, Any]) -> random.Random:
        return random.Random(f"lmk2video-{self.seed}-{self.epoch}-{sample['__key__']}")


@dataclass(frozen=True)
class Stage1Decoder:
    """Raw sample -> ``per_clip`` items ``{"target", "reference", "pose"}``, each (3, H, W) uint8,
    with the frame numbers ``target_index`` and ``reference_index``."""

    settings: SampleSettings

    def __call__(self, sample: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        s = self.settings
        faces = np.flatnonzero(has_face(sample)).tolist()
        if not faces:
            return
        rng = s.rng(sample)
        pairs = [(rng.choice(faces), rng.choice(faces)) for _ in range(s.per_clip)]
        targets = [t for t, _ in pairs]
        frames = read_frames(member_bytes(sample, VIDEO), [i for pair in pairs for i in pair], s.size)
        poses = pose_frames(sample, targets, s.size, s.pose_source)
        for n in range(len(pairs)):
            yield {"target": _chw(frames[2 * n]), "reference": _chw(frames[2 * n + 1]), "pose": _chw(poses[n]),
                   "target_index": pairs[n][0], "reference_index": pairs[n][1]}


@dataclass(frozen=True)
class Stage2Decoder:
    """Raw sample -> ``per_clip`` items ``{"frames", "poses"}`` (F, 3, H, W) uint8,
    ``{"reference"}`` (3, H, W) uint8 and the frame numbers ``indices`` (F,) and
    ``reference_index``; stride 1, or 4 with probability ``aug_chance``."""

    settings: SampleSettings
    frames: int = WINDOW_FRAMES
    stride: int = WINDOW_STRIDE
    aug_stride: int = WINDOW_STRIDE_AUG
    aug_chance: float = 0.5

    def __call__(self, sample: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        s = self.settings
        face = has_face(sample)
        faces = np.flatnonzero(face).tolist()
        rng = s.rng(sample)
        windows, references = [], []
        for _ in range(s.per_clip):
            stride = self.aug_stride if rng.random() < self.aug_chance else self.stride
            span = min(len(face), (self.frames - 1) * stride + 1)
            starts = face_starts(face, span)
            if not starts:  # the long stride does not fit between missing faces: try the short one
                span = min(len(face), (self.frames - 1) * self.stride + 1)
                starts = face_starts(face, span)
                stride = self.stride
            if not starts:
                return
            windows.append(window_indices(len(face), self.frames, stride, rng, starts))
            references.append(rng.choice(faces))
        frames = read_frames(member_bytes(sample, VIDEO), [i for w in windows for i in w] + references, s.size)
        poses = pose_frames(sample, [i for w in windows for i in w], s.size, s.pose_source)
        count = self.frames
        for n, _ in enumerate(windows):
            yield {"frames": _chw(frames[n * count:(n + 1) * count]), "poses": _chw(poses[n * count:(n + 1) * count]),
                   "reference": _chw(frames[len(windows) * count + n]),
                   "indices": np.asarray(windows[n]), "reference_index": references[n]}
