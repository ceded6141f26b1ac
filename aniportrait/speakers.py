"""One speaker per clip: a second person in the frame, and identity switches of the tracked face.

The face stage asks the FaceLandmarker for one face, so a clip showing two people side by
side silently gets one of them, and a clip whose tracked face switches to someone else
(two speakers joined, or the tracker hopping between two faces) looks like one face track.
Two checks catch these:

* :class:`FaceCounter` runs MediaPipe's face detector (BlazeFace short range, the
  ``face_detector.tflite`` read in memory out of the FaceLandmarker bundle; no file is
  written) in IMAGE mode, which returns every face, on every :data:`COUNT_STEP`-th frame.
  It is fed from the face stage's own decode loop, like :class:`aniportrait.quality.FrameScores`.
  A second face counts only when its box is at least :data:`SECOND_FACE_MIN_RATIO` of the
  biggest face's height, so a small face in the background does not reject a clip.
* :func:`track_jumps` counts jumps of the tracked face's landmark box (its centre moving
  more than :data:`JUMP_CENTRE` face heights, or its height changing by more than a factor
  :data:`JUMP_SCALE`, from one face frame to the next) that head motion cannot make.
  A join of two clips whose faces sit at the same place and size is not a jump (the
  scene cuts of :mod:`aniportrait.quality` see that hard cut); a tracker hopping between
  two people in one shot, which no scene cut marks, is.

Cost (``benchmarks/bench_checks.py``, one CPU of the 2-core development machine, 512x512
clips): the detector takes ~4 ms a frame, so the counter adds 0.34-0.45 ms per frame at a
step of 10 (detector creation included), 1.9-2.7% of the face stage (decode + VIDEO-mode
landmarker, 15-19 ms per frame over three runs); :func:`track_jumps` adds ~0.01 ms per frame.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from aniportrait.matplotlib_dir import keep_matplotlib_in_temp

COUNT_STEP = 10
"""FaceCounter samples frame 0, 10, 20, ...: a second person in a clip is there for seconds."""
SECOND_FACE_MIN_RATIO = 0.5
"""A second face counts when its box height is at least this share of the biggest face's."""
JUMP_CENTRE = 0.1
"""Face-box centre motion between two face frames, in face heights, above which the face
jumped. Measured per frame with VIDEO-mode tracking: head motion moves the centre at most
0.028 on ``head_pose_ref.mp4`` (0.048 and 0.054 with every 2nd and 3rd frame only, i.e.
2x and 3x faster motion), 0.020 on ``talking_lyl_7s.mp4``, 0.016 on
``talking_hdtf_radio10_0.mp4``, 0.061 on the small (108 px) face of the HEVC seated source
cropped to 512; joining the HDTF clip and ``talking_lyl_7s`` (both face-centred 512 crops)
jumps 0.159 at the join; a switch from a face on the left half to another on the right
moves 1.07 per frame (2.1 face heights across the one frame the tracker loses)."""
JUMP_SCALE = 1.25
"""Face-box height factor between two face frames above which the face jumped. Head motion
changes the height by at most 1.043x per frame on the same clips (1.039x at 3x speed); a
switch from a full-frame face to another at half the size changes it 1.86x."""
MAX_GAP_FRAMES = 2
"""Face frames up to this many frames apart are compared. On a hard switch to a face
elsewhere, VIDEO-mode tracking loses the face for one frame before it detects the new one;
the centre threshold grows with the frames elapsed."""
DETECTOR_ENTRY = "face_detector.tflite"
#: Everything above that shapes the scores (part of the face stage's settings hash).
SPEAKER_SETTINGS = {"count_step": COUNT_STEP, "second_face_min_ratio": SECOND_FACE_MIN_RATIO,
                    "jump_centre": JUMP_CENTRE, "jump_scale": JUMP_SCALE, "max_gap_frames": MAX_GAP_FRAMES}


def bundled_detector(model_path: str | Path) -> bytes:
    """The face detector model bytes inside a FaceLandmarker ``.task`` bundle (a zip)."""
    with zipfile.ZipFile(model_path) as bundle:
        return bundle.read(DETECTOR_ENTRY)


class FaceCounter:
    """Counts faces on every ``step``-th frame; the detector loads lazily, once, on the first sampled frame."""

    def __init__(self, model_path: str, step: int = COUNT_STEP, min_confidence: float = 0.5) -> None:
        if step < 1:
            raise ValueError("step must be positive")
        self.model_path = model_path
        self.step = step
        self.min_confidence = min_confidence
        self._detector = None
        self._counts: list[int] = []
        self._second: list[bool] = []

    def _detect(self, frame_rgb: np.ndarray) -> list[float]:
        """Box heights in pixels of the faces on one RGB frame."""
        keep_matplotlib_in_temp()
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        if self._detector is None:
            options = vision.FaceDetectorOptions(
                base_options=BaseOptions(model_asset_buffer=bundled_detector(self.model_path)),
                running_mode=vision.RunningMode.IMAGE, min_detection_confidence=self.min_confidence)
            self._detector = vision.FaceDetector.create_from_options(options)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame_rgb))
        return [float(d.bounding_box.height) for d in self._detector.detect(image).detections]

    def add(self, index: int, frame_rgb: np.ndarray) -> None:
        """Feed frame ``index`` of the clip (RGB uint8); frames off the step are ignored."""
        if index % self.step:
            return
        heights = sorted(self._detect(frame_rgb), reverse=True)
        self._counts.append(len(heights))
        self._second.append(len(heights) > 1 and heights[1] >= SECOND_FACE_MIN_RATIO * heights[0])

    def reset(self) -> None:
        """Forget the counts (start of the next clip); the detector stays loaded."""
        self._counts.clear()
        self._second.clear()

    def result(self) -> dict[str, int | float]:
        """``faces_max`` (most faces on one sampled frame), ``second_face_rate`` (share of sampled
        frames with a second face of comparable size; 0.0 without samples) and ``sampled``."""
        sampled = len(self._counts)
        return {"faces_max": max(self._counts, default=0),
                "second_face_rate": sum(self._second) / sampled if sampled else 0.0,
                "sampled": sampled}

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track_jumps(lmks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> int:
    """Identity switches of the tracked face: jumps of its landmark box between face frames.

    ``lmks`` (T, 478, 3) normalised landmarks, ``has_face`` (T,). Face frames at most
    :data:`MAX_GAP_FRAMES` apart are compared: a jump is a centre move above
    :data:`JUMP_CENTRE` face heights per elapsed frame or a height factor above
    :data:`JUMP_SCALE`. Jumps on consecutive comparisons count once.
    """
    rows = np.flatnonzero(np.asarray(has_face, bool) & np.isfinite(lmks[..., :2]).all(axis=(1, 2)))
    if len(rows) < 2:
        return 0
    xy = np.ascontiguousarray(lmks[rows, :, :2].transpose(0, 2, 1))  # (n, 2, 478): reductions 8x faster
    low, high = (box.astype(np.float64) * (width, height) for box in (xy.min(axis=2), xy.max(axis=2)))
    centre, size = (low + high) / 2, np.maximum(high[:, 1] - low[:, 1], 1.0)
    elapsed = np.diff(rows)
    moved = np.linalg.norm(np.diff(centre, axis=0), axis=1) / np.minimum(size[1:], size[:-1])
    factor = np.maximum(size[1:] / size[:-1], size[:-1] / size[1:])
    jump = (elapsed <= MAX_GAP_FRAMES + 1) & ((moved > JUMP_CENTRE * elapsed) | (factor > JUMP_SCALE))
    return int(np.count_nonzero(jump & ~np.r_[False, jump[:-1]]))
