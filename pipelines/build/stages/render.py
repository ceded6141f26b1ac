"""Render stage: the official lip-coloured pose image of every frame, as the ``pose.mp4`` member."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aniportrait.format import HAS_FACE, LANDMARKS, POSE_VIDEO
from aniportrait.media.encode import LOSSLESS_RGB, encode_rgb_lossless
from aniportrait.render import draw_pose_image
from aniportrait.schema import ClipState
from aniportrait.storage import local_atomic_path
from pipelines.build.stages.base import ClipStage


def pose_frames(lmks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> Iterator[np.ndarray]:
    """Pose image per frame from normalised landmarks; a black frame where no face was found."""
    for points, found in zip(lmks, has_face):
        if found:
            yield draw_pose_image(points[:, :2], width, height, normalized=True)
        else:
            yield np.zeros((height, width, 3), np.uint8)


class RenderPose(ClipStage):
    """Draw the clip's pose images from ``lmks.npy`` and encode them losslessly."""

    name = "render"

    def __init__(self, work_dir: str, upstream_hash: str = "") -> None:
        super().__init__(work_dir, {"encoder": LOSSLESS_RGB}, upstream_hash)

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        clip_id = state.record.clip_id
        lmks = np.load(self.work.input_file(clip_id, LANDMARKS.work_file))
        has_face = np.load(self.work.input_file(clip_id, HAS_FACE.work_file))
        width, height, fps = state.info.width, state.info.height, state.info.fps
        with local_atomic_path(self.work.clip_file(clip_id, POSE_VIDEO.work_file)) as tmp:
            encode_rgb_lossless(pose_frames(lmks, has_face, width, height), width, height, fps, tmp)
        state.outputs[POSE_VIDEO.name] = POSE_VIDEO.work_file
