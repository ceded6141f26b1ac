"""Frames and pose images of one shard sample, for the Lmk2Video trainers.

Video frames come from the sample's ``mp4`` bytes (decord, in memory, resized by the
decoder). Pose images come, by default, from ``lmks.npy``: the official lip-coloured
image (:func:`aniportrait.render.draw_pose_image`) drawn straight at the training size,
as the official dataset does. Decoding ``pose.mp4`` (the same images, stored losslessly
at the clip size) is the alternative, ``source="video"``.

Measured with ``benchmarks/bench_pose_source.py`` (CPU time per pose image, both ways in
one run on the same indices) on the fixture shard: 3 real clips, 256x256, 270 frames;
2-core shared machine, 2026-11-25, 30 repeats:

==========================  =========  ===========  ===========
access pattern              draw (ms)  decode (ms)  draw/decode
==========================  =========  ===========  ===========
whole clip, every frame          0.60         0.91         0.66
stage 1 (one random frame)       1.11        26.8          0.041
stage 2 (16-frame window)        0.58         2.21         0.26
==========================  =========  ===========  ===========

At 64x64 the ratios are 0.57 / 0.041 / 0.22. ``pose.mp4`` has one keyframe per clip, so
a frame in the middle costs decoding its whole prefix; drawing costs the same anywhere.
Drawing is also exact at any training size (no second resize of a 256/512 image), so it
is the default. ``cv2`` is imported before ``decord`` on purpose (decord first breaks
OpenCV's PNG codec in the process).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import cv2  # noqa: F401  (before decord, see the module docstring)
import numpy as np

from aniportrait.format import HAS_FACE, LANDMARKS, POSE_VIDEO, VIDEO, member_bytes, read_array
from aniportrait.render import draw_pose_image

PoseSource = Literal["draw", "video"]
POSE_SOURCES: tuple[PoseSource, ...] = ("draw", "video")
#: Tar members the trainers read (everything else in a shard is skipped unread).
MEMBERS_DRAW = frozenset({VIDEO.name, LANDMARKS.name, HAS_FACE.name})
MEMBERS_VIDEO = frozenset({VIDEO.name, POSE_VIDEO.name, HAS_FACE.name})

Size = tuple[int, int]  # (width, height)


def members_for(source: PoseSource) -> frozenset[str]:
    """The tar members a trainer needs with pose images from ``source``."""
    if source not in POSE_SOURCES:
        raise ValueError(f"unknown pose source {source!r}; choose one of {', '.join(POSE_SOURCES)}")
    return MEMBERS_DRAW if source == "draw" else MEMBERS_VIDEO


def _reader(data: bytes, size: Size | None):  # -> decord.VideoReader
    import decord  # after cv2, see the module docstring

    extra = {} if size is None else {"width": size[0], "height": size[1]}
    return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1, **extra)


def video_length(data: bytes) -> int:
    """Number of frames of an encoded video."""
    return len(_reader(data, None))


def read_frames(data: bytes, indices: Sequence[int], size: Size | None = None) -> np.ndarray:
    """Frames ``indices`` of an encoded video (``mp4`` bytes) as (n, H, W, 3) uint8 RGB.

    ``size`` = (width, height) resizes in the decoder; ``None`` keeps the stored size.
    Indices may repeat and come in any order; each distinct frame is decoded once.
    """
    if not len(indices):
        raise ValueError("no frame indices to read")
    reader = _reader(data, size)
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0 or wanted[-1] >= len(reader):
        raise IndexError(f"frame index out of range: {wanted[0]}..{wanted[-1]} of a {len(reader)}-frame video")
    frames = reader.get_batch(wanted).asnumpy()
    row = {index: n for n, index in enumerate(wanted)}
    return frames[[row[int(i)] for i in indices]]


def draw_pose_frames(lmks: np.ndarray, has_face: np.ndarray, indices: Sequence[int], size: Size) -> np.ndarray:
    """Official pose images (n, H, W, 3) uint8 of frames ``indices``, drawn from normalised
    landmarks ``lmks`` (T, >=468, 2+) at ``size``; black where ``has_face`` is false."""
    width, height = size
    out = np.zeros((len(indices), height, width, 3), np.uint8)
    for n, index in enumerate(indices):
        if has_face[index]:
            out[n] = draw_pose_image(lmks[index, :, :2], width, height, normalized=True)
    return out


def has_face(sample: dict[str, Any]) -> np.ndarray:
    """Per-frame face flags (T,) bool of a raw sample (all true when the member is absent)."""
    flags = read_array(sample, HAS_FACE, required=False)
    if flags is not None:
        return flags.astype(bool)
    lmks = read_array(sample, LANDMARKS, required=False)
    if lmks is not None:
        return np.ones(len(lmks), bool)
    return np.ones(video_length(member_bytes(sample, VIDEO)), bool)


def pose_frames(sample: dict[str, Any], indices: Sequence[int], size: Size, source: PoseSource = "draw") -> np.ndarray:
    """Pose images (n, H, W, 3) uint8 of frames ``indices`` of a raw shard sample:
    drawn from ``lmks.npy`` (``"draw"``) or decoded from ``pose.mp4`` (``"video"``)."""
    members_for(source)
    if source == "draw":
        return draw_pose_frames(read_array(sample, LANDMARKS), has_face(sample), indices, size)
    return read_frames(member_bytes(sample, POSE_VIDEO), indices, size)

