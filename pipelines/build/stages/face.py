"""Face stage: MediaPipe landmarks, canonical mesh, pose matrix and 6D pose per frame."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np

from aniportrait.face import check_detection_rate, face_arrays
from aniportrait.format import VIDEO, array_bytes
from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings, file_sha256
from aniportrait.quality import FrameScores
from aniportrait.schema import ClipState
from aniportrait.scores import json_float
from aniportrait.speakers import SPEAKER_SETTINGS, FaceCounter, track_jumps
from aniportrait.storage import write_local_atomic
from pipelines.build.stages.base import ClipStage


class ExtractFace(ClipStage):
    """Track the face through the clip and store the per-frame arrays as ``.npy`` files.

    The same decode feeds the quality scores that need pixels (scene cuts, sharpness,
    brightness: :class:`aniportrait.quality.FrameScores`) and the face count on sampled
    frames (:class:`aniportrait.speakers.FaceCounter`); with the track's identity switches
    (:func:`aniportrait.speakers.track_jumps`) they are recorded in ``info``.

    The settings hash uses the model's sha256, not its path: the same model anywhere
    gives the same outputs, another model invalidates the cache.
    """

    name = "face"

    def __init__(self, work_dir: str, landmarker: LandmarkerSettings, min_face_rate: float,
                 scene_threshold: float = 27.0, upstream_hash: str = "", model_sha256: str | None = None) -> None:
        if not 0.0 <= min_face_rate <= 1.0:
            raise ValueError(f"min_face_rate must be within 0..1, got {min_face_rate}")
        self.model_sha256 = model_sha256 or file_sha256(landmarker.model_path)
        settings = {**dataclasses.asdict(landmarker), "model_path": self.model_sha256, "min_face_rate": min_face_rate,
                    "scene_threshold": scene_threshold, "speakers": SPEAKER_SETTINGS}
        super().__init__(work_dir, settings, upstream_hash)
        self.landmarker = landmarker
        self.min_face_rate = min_face_rate
        self.scene_threshold = scene_threshold
        self.runner = FaceLandmarkerRunner(landmarker)
        self.faces = FaceCounter(landmarker.model_path)  # one detector per actor, reset per clip

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "landmarker": self.landmarker, "min_face_rate": self.min_face_rate,
                "scene_threshold": self.scene_threshold, "upstream_hash": self.upstream_hash,
                "model_sha256": self.model_sha256}

    def model_info(self) -> dict[str, str]:
        return {"file": Path(self.landmarker.model_path).name, "sha256": self.model_sha256,
                "mode": self.landmarker.mode}

    def process(self, state: ClipState) -> None:
        clip_id = state.record.clip_id
        frame_scores = FrameScores(float(state.info.fps), self.scene_threshold, rgb=True)
        self.faces.reset()
        frame_index = itertools.count()

        def on_frame(frame: np.ndarray, lmks: np.ndarray | None) -> None:
            frame_scores.add(frame, lmks)
            self.faces.add(next(frame_index), frame)

        track = self.runner.track(self.work.input_file(clip_id, VIDEO.work_file), on_frame=on_frame)
        scores, faces = frame_scores.result(), self.faces.result()
        state.info.update(scene_cuts=scores["scene_cuts"], sharpness=json_float(scores["sharpness"]),
                          brightness=json_float(scores["brightness"]), faces_max=faces["faces_max"],
                          second_face_rate=round(faces["second_face_rate"], 6),
                          track_jumps=track_jumps(track.lmks, track.has_face, track.width, track.height))
        state.info.face_frames = int(track.has_face.sum())
        state.info.face_rate = round(track.detection_rate, 6)
        check_detection_rate(track, self.min_face_rate)
        for member, array in face_arrays(track).members().items():
            write_local_atomic(self.work.clip_file(clip_id, member.work_file), array_bytes(array))
            state.outputs[member.name] = member.work_file
