"""Inference conventions that belong to the weights, not to the code (torch-free).

The official files and the weights our trainers write differ in how inference must use them:

- **Pose feed** (Lmk2Video): how uint8 pose images become the PoseGuider's input. ``official``:
  ``2v-1`` of the uint8 values, in [-1, 509], what the official ``audio2vid.py`` feeds the
  released weights (uint8 arrays through ``VaeImageProcessor``, which rescales PIL images
  only); ``unit``: ``2v/255-1`` in [-1, 1], the range of the official training and ours. The
  Lmk2Video trainer records its feed in :data:`CONVENTIONS_FILE` next to the files it writes
  (:func:`recorded_pose_feed`).
- **Head-pose post-processing** (Audio2Pose, :class:`PosePostprocess`): the official script
  halves the predicted rotations and smooths over 7 frames (:data:`OFFICIAL_POSTPROCESS`). Our
  trainer learns full relative poses, so its checkpoints record a scale of 1.0 and their
  smoothing window in ``config["inference"]`` (:data:`TRAINED_POSTPROCESS` when absent).

Options of ``infer`` and ``predict-landmarks`` override each (``--pose-feed``, ``--pose-scale``,
``--pose-smooth``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.pose import smooth_pose

#: The pose feeds: the official script's (``2v-1``) and training's ([-1, 1]).
POSE_FEEDS = ("official", "unit")
#: The feed of the official files, and the one our Lmk2Video trainer trains with.
OFFICIAL_POSE_FEED, TRAINED_POSE_FEED = "official", "unit"
#: Written by the Lmk2Video trainer next to its weights: ``{"pose_feed": "unit"}``.
CONVENTIONS_FILE = "inference.json"
#: The model sizes the Lmk2Video trainer writes next to its weights (official folders have none).
TRAINER_CONFIG_FILE = "lmk2video_config.json"


def check_pose_feed(feed: str) -> str:
    """``feed`` if it is one of :data:`POSE_FEEDS`, else a ``ValueError`` naming them."""
    if feed not in POSE_FEEDS:
        raise ValueError(f"the pose feed must be one of {', '.join(POSE_FEEDS)}, got {feed!r}")
    return feed


def recorded_pose_feed(folder: str | Path) -> str:
    """The pose feed of the Lmk2Video weights in ``folder``: the one its :data:`CONVENTIONS_FILE`
    records; without one, ``unit`` where our trainer's :data:`TRAINER_CONFIG_FILE` is (written
    before the feed was recorded), else ``official`` (the official files)."""
    path = Path(folder) / CONVENTIONS_FILE
    if not path.is_file():
        return TRAINED_POSE_FEED if (Path(folder) / TRAINER_CONFIG_FILE).is_file() else OFFICIAL_POSE_FEED
    try:
        return check_pose_feed(json.loads(path.read_text())["pose_feed"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} does not record a valid pose_feed: {exc}") from exc


@dataclass(frozen=True)
class PosePostprocess:
    """What inference does to Audio2Pose's raw poses (T, 6): rotations (degrees) times
    ``rotation_scale``, then a centred moving mean over ``smooth`` frames (1: none).

    A trainer checkpoint stores it as ``{"pose_rotation_scale", "pose_smooth"}`` (:meth:`to_dict`)
    in its ``config["inference"]``.
    """

    rotation_scale: float
    smooth: int

    def __post_init__(self) -> None:
        if not math.isfinite(self.rotation_scale):
            raise ValueError(f"the pose rotation scale must be a finite number, got {self.rotation_scale}")
        if self.smooth < 1:
            raise ValueError(f"the pose smoothing window must be >= 1 frame, got {self.smooth}")

    def __call__(self, poses: np.ndarray) -> np.ndarray:
        """Head poses (T, 6) float64 of raw Audio2Pose output (T, 6)."""
        scaled = np.array(poses, np.float64)
        scaled[:, :3] *= self.rotation_scale
        return smooth_pose(scaled, self.smooth)

    def to_dict(self) -> dict[str, Any]:
        return {"pose_rotation_scale": self.rotation_scale, "pose_smooth": self.smooth}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], default: PosePostprocess) -> PosePostprocess:
        """The post-processing ``values`` record, ``default``'s for what they lack."""
        return cls(float(values.get("pose_rotation_scale", default.rotation_scale)),
                   int(values.get("pose_smooth", default.smooth)))

    def overridden(self, rotation_scale: float | None = None, smooth: int | None = None) -> PosePostprocess:
        """This post-processing with the values given (not None) replaced (``--pose-scale``, ``--pose-smooth``)."""
        return PosePostprocess(self.rotation_scale if rotation_scale is None else float(rotation_scale),
                               self.smooth if smooth is None else int(smooth))


#: The official ``audio2vid.py`` post-processing, the convention of the official ``audio2pose.pt``.
OFFICIAL_POSTPROCESS = PosePostprocess(rotation_scale=0.5, smooth=7)
#: Weights trained here: full relative poses (scale 1), smoothed over the official window unless
#: the trainer recorded another.
TRAINED_POSTPROCESS = PosePostprocess(rotation_scale=1.0, smooth=7)
