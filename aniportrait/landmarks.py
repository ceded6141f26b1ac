"""MediaPipe FaceLandmarker over a whole clip, decoded in bounded chunks.

One landmarker is created per clip (about 40 ms): in VIDEO (tracking) mode MediaPipe
keeps state between frames, and a landmarker shared across clips would make a clip's
landmarks depend on which clip the same worker saw before, so outputs would change with
the worker count. A fresh landmarker per clip keeps every clip independent and the
shards reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2  # noqa: F401  (import before decord: decord first breaks cv2's PNG codec)
import numpy as np

from aniportrait.matplotlib_dir import keep_matplotlib_in_temp

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52
RUNNING_MODES = ("video", "image")


@dataclass(frozen=True, slots=True)
class LandmarkerSettings:
    """How the FaceLandmarker runs. ``mode`` is ``video`` (tracking) or ``image``."""

    model_path: str
    mode: str = "video"
    num_faces: int = 1
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    chunk_frames: int = 64

    def __post_init__(self) -> None:
        if self.mode not in RUNNING_MODES:
            raise ValueError(f"landmarker mode must be one of {RUNNING_MODES}, got {self.mode!r}")
        if self.chunk_frames < 1:
            raise ValueError("chunk_frames must be positive")


@dataclass(slots=True)
class FaceTrack:
    """Per-frame MediaPipe outputs of one clip; rows without a face are NaN, ``has_face`` False."""

    lmks: np.ndarray            # (T, 478, 3) float32, x/y normalised to the frame, z relative
    blendshapes: np.ndarray     # (T, 52) float32, MediaPipe order (index 0 is ``_neutral``)
    mp_trans_mat: np.ndarray    # (T, 4, 4) float32, MediaPipe's own facial transformation matrix
    has_face: np.ndarray        # (T,) bool
    width: int
    height: int
    fps: float

    @property
    def detection_rate(self) -> float:
        return float(self.has_face.mean()) if len(self.has_face) else 0.0


def file_sha256(path: str | Path) -> str:
    """sha256 of a model file (recorded in the release)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_frame_chunks(video: str | Path, chunk_frames: int) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(frames (n,H,W,3) uint8 RGB, fps)`` chunks; memory is bounded by the chunk."""
    import decord  # after cv2, see the import note above

    reader = decord.VideoReader(str(video), ctx=decord.cpu(0), num_threads=1)
    fps = float(reader.get_avg_fps())
    for start in range(0, len(reader), chunk_frames):
        indices = list(range(start, min(start + chunk_frames, len(reader))))
        yield reader.get_batch(indices).asnumpy(), fps


class FaceLandmarkerRunner:
    """Runs the FaceLandmarker on whole clips; the model bytes load lazily, once per process."""

    def __init__(self, settings: LandmarkerSettings) -> None:
        self.settings = settings

    @cached_property
    def _model_bytes(self) -> bytes:
        path = Path(self.settings.model_path)
        if not path.is_file():
            raise FileNotFoundError(f"MediaPipe face landmarker model not found at {path}")
        return path.read_bytes()

    def _create(self):  # -> vision.FaceLandmarker
        keep_matplotlib_in_temp()
        from mediapipe.tasks.python import BaseOptions, vision

        s = self.settings
        mode = vision.RunningMode.VIDEO if s.mode == "video" else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=self._model_bytes),
            running_mode=mode,
            num_faces=s.num_faces,
            min_face_detection_confidence=s.min_detection_confidence,
            min_face_presence_confidence=s.min_presence_confidence,
            min_tracking_confidence=s.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        return vision.FaceLandmarker.create_from_options(options)

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """One still RGB image's ``(landmarks, blendshapes, matrix, found)`` (needs ``mode="image"``)."""
        keep_matplotlib_in_temp()
        import mediapipe as mp

        if self.settings.mode != "image":
            raise ValueError("detect() runs on a still image: build the runner with mode='image'")
        with self._create() as landmarker:
            result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb)))
        return result_arrays(result)

    def track(self, video: str | Path,
              on_frame: Callable[[np.ndarray, np.ndarray | None], None] | None = None) -> FaceTrack:
        """Landmarks, blendshapes and MediaPipe's matrix for every frame of ``video``.

        ``on_frame(rgb_frame, landmarks_or_None)`` sees every decoded frame, so other
        per-frame work (quality scores) shares this decode.
        """
        keep_matplotlib_in_temp()
        import mediapipe as mp

        rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = []
        width = height = 0
        fps = 0.0
        landmarker = self._create()
        try:
            index = 0
            for frames, fps in iter_frame_chunks(video, self.settings.chunk_frames):
                height, width = frames.shape[1:3]
                for frame in frames:
                    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
                    if self.settings.mode == "video":
                        result = landmarker.detect_for_video(image, round(index * 1000 / fps))
                    else:
                        result = landmarker.detect(image)
                    row = result_arrays(result)
                    rows.append(row)
                    if on_frame is not None:
                        on_frame(frame, row[0] if row[3] else None)
                    index += 1
        finally:
            landmarker.close()
        return stack_track(rows, width, height, fps)


def result_arrays(result) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """One frame's (landmarks, blendshapes, matrix, found) from a FaceLandmarker result."""
    if not result.face_landmarks:
        return (np.full((NUM_LANDMARKS, 3), np.nan, np.float32), np.full(NUM_BLENDSHAPES, np.nan, np.float32),
                np.full((4, 4), np.nan, np.float32), False)
    lmks = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], np.float32)
    scores = np.array([c.score for c in result.face_blendshapes[0]], np.float32)
    matrix = np.asarray(result.facial_transformation_matrixes[0], np.float32)
    return lmks, scores, matrix, True


def stack_track(rows: list, width: int, height: int, fps: float) -> FaceTrack:
    """Stack per-frame ``result_arrays`` rows into a :class:`FaceTrack`."""
    if not rows:
        return FaceTrack(np.zeros((0, NUM_LANDMARKS, 3), np.float32), np.zeros((0, NUM_BLENDSHAPES), np.float32),
                         np.zeros((0, 4, 4), np.float32), np.zeros(0, bool), width, height, fps)
    lmks, scores, matrices, found = zip(*rows)
    return FaceTrack(np.stack(lmks), np.stack(scores), np.stack(matrices), np.array(found, bool), width, height, fps)
