"""Quality scores of one clip for curation: scene cuts, face metrics, image quality, a/v sync.

Pure functions on what the clip and face stages store (``clip.mp4``, ``audio.wav`` and the
face ``.npy`` arrays); a stage calls :func:`clip_quality` and records every field of
:class:`QualityScores` on the clip's ``info``. What each score means, its unit and its
manifest column are declared in :mod:`aniportrait.scores`. Everything is deterministic
(same input, same floats) and a clip without a face gives NaN / ``None`` scores instead
of an error, so the caller can reject it with a reason.

Cost: the scores that need pixels (scene cuts on frames downscaled to :data:`SCENE_WIDTH`
pixels wide, image metrics on every :data:`IMAGE_STEP`-th frame) are gathered by
:class:`FrameScores` from the face stage's own decode loop, so a clip is decoded once;
``benchmarks/bench_quality.py`` measures the cost against the face stage.

Sync without weights: the mouth opening (inner-lip distance over face height) is
correlated with the speech energy at every offset within ``max_offset`` frames; the best
offset is the estimate and its confidence says how far that correlation stands above the
correlations of the same two signals paired at offsets outside the searched window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from aniportrait.media.probe import MediaError
from aniportrait.pose import fill_gaps
from aniportrait.scores import json_float

# Inner-lip landmark pairs (upper, lower) of the MediaPipe face mesh, centre and both sides.
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
SPEECH_BAND_HZ = (300.0, 3000.0)
SYNC_MIN_SECONDS = 4.0
"""Shorter clips get ``reliable=False``: with ~2 s of speech a single breath or pause can
outweigh the lips (the real 2.1 s HDTF clip correlates negatively at its true offset)."""
SYNC_MIN_MOUTH_RANGE = 0.01
"""Mouth opening p95 - p5 (fraction of face height) below which the lips barely move."""
SYNC_SILENCE_ENERGY = 1e-6
"""Speech-band energy (full scale 1.0) whose 95th percentile marks a silent track (-60 dBFS)."""
SYNC_MIN_FACE_RATE = 0.5
SYNC_CONF_THRESHOLD = 3.0
"""Suggested ``sync_conf`` filter threshold. Measured on ``talking_lyl_7s`` (7.8 s): the true
pairing scores 3.9-4.1 with the audio shifted by 0, +-3 and +-6 frames; five mismatched
pairings (its audio reversed or rolled by half; ``head_pose_ref``'s mouth with this audio or
its own unrelated track; this mouth with that track) score 1.6-2.7. One real talking clip
is thin evidence: re-check the threshold on a few hundred real clips before relying on it."""
SCENE_WIDTH = 128
"""Scene detection runs on frames resized (bilinear) to this width; PySceneDetect's own
default is 256. A hard cut changes most pixels: on the fixtures ContentDetector's scores at
128 px are within 0.3 of those at 256 px (a real join scores ~58, motion within a shot <= 6,
threshold 27), for about half the detector's cost."""
IMAGE_STEP = 5
"""Image metrics use every 5th frame (frame 0, 5, 10, ...): on the three 512 px fixtures the
medians are within 5% (sharpness) and 0.2 grey levels (brightness) of every frame's, at a
fifth of the cost."""


@dataclass(frozen=True, slots=True)
class SyncEstimate:
    """Audio-visual offset of a clip, weight-free.

    ``offset_frames > 0``: the audio lags the lips by that many frames (delaying the audio by
    ``k`` frames raises it by ``k``; :func:`shift_audio` with this offset corrects it).
    ``confidence``: z-score of the best offset's correlation against the correlations at
    offsets outside the search window (see :data:`SYNC_CONF_THRESHOLD`). ``score_at_zero``:
    correlation at offset 0 (how well the clip is synced as it is).
    """

    offset_frames: int
    confidence: float
    score_at_zero: float
    reliable: bool
    note: str | None

    def to_dict(self) -> dict:
        return {"offset_frames": self.offset_frames, "confidence": json_float(self.confidence),
                "score_at_zero": json_float(self.score_at_zero), "reliable": self.reliable, "note": self.note}


@dataclass(frozen=True, slots=True)
class QualityScores:
    """What :func:`clip_quality` measures on one clip (units there).

    Each field is a :class:`~aniportrait.schema.ClipInfo` fact of the same name; the scores
    among them (all but ``sync_note``) are declared in :data:`aniportrait.scores.SCORES`.
    """

    face_rate: float
    face_px_median: float
    face_px_min: float
    yaw_range_deg: float
    pitch_range_deg: float
    roll_range_deg: float
    jitter: float
    sharpness: float
    brightness: float
    scene_cuts: tuple[int, ...]
    sync_offset: int | None
    sync_conf: float | None
    sync_score0: float | None
    sync_note: str | None

    def to_dict(self) -> dict:
        """JSON-able dict; floats rounded to 6 decimals, NaN as ``None`` (byte-stable manifests)."""
        out = asdict(self)
        out["scene_cuts"] = list(self.scene_cuts)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = json_float(value)
        return out


# ---------------------------------------------------------------------------- face metrics

def _face_rows(lmks: np.ndarray, has_face: np.ndarray) -> np.ndarray:
    """Frames with a face and finite landmarks."""
    finite = np.isfinite(lmks[..., :2]).all(axis=(1, 2)) if len(lmks) else np.zeros(0, bool)
    return np.asarray(has_face, bool) & finite


def face_heights_px(lmks: np.ndarray, has_face: np.ndarray, height: int) -> np.ndarray:
    """(T,) face height in pixels (vertical extent of all landmarks), NaN without a face."""
    rows = _face_rows(lmks, has_face)
    out = np.full(len(lmks), np.nan)
    y = lmks[rows, :, 1].astype(np.float64)
    out[rows] = (y.max(axis=1) - y.min(axis=1)) * height
    return out


def face_boxes(lmks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, 4) int ``x0, y0, x1, y1`` landmark boxes clipped to the frame; ``0, 0, 0, 0`` without a face."""
    rows = _face_rows(lmks, has_face)
    boxes = np.zeros((len(lmks), 4), np.int64)
    xy = lmks[rows, :, :2].astype(np.float64) * (width, height)
    lo, hi = np.floor(xy.min(axis=1)), np.ceil(xy.max(axis=1))
    boxes[rows] = np.concatenate([np.clip(lo, 0, (width, height)), np.clip(hi, 0, (width, height))], axis=1)
    return boxes


def pose_ranges(pose6d: np.ndarray, has_face: np.ndarray) -> dict[str, float]:
    """Head-pose ranges in degrees: p95 - p5 over the frames with a face (NaN without one).

    ``pose6d[:, :3]`` are scipy extrinsic ``'xyz'`` Euler angles of the canonical face in
    MediaPipe's camera frame (x right, y up, z toward the camera): rotation about x is the
    pitch (nodding), about y the yaw (turning), about z the roll (tilting). Angles are
    taken relative to their median and wrapped to +-180 first, so a pose near the wrap
    point does not look like a 360 degree swing.
    """
    rows = np.asarray(has_face, bool) & np.isfinite(pose6d[:, :3]).all(axis=1)
    names = {"pitch_range_deg": 0, "yaw_range_deg": 1, "roll_range_deg": 2}
    if not rows.any():
        return {name: math.nan for name in names}
    out = {}
    for name, column in names.items():
        angles = pose6d[rows, column].astype(np.float64)
        centred = (angles - np.median(angles) + 180.0) % 360.0 - 180.0
        low, high = np.percentile(centred, [5, 95])
        out[name] = float(high - low)
    return out


def landmark_jitter(lmks3d: np.ndarray, has_face: np.ndarray) -> float:
    """Median frame-to-frame motion of the canonical mesh, in canonical-model cm per frame.

    ``lmks3d`` has the head pose removed, so this is expression plus tracking noise: the
    mean vertex displacement between consecutive frames that both have a face, median
    over the clip (the canonical face is about 17 cm wide). NaN with fewer than 2 such frames.
    """
    rows = np.asarray(has_face, bool) & np.isfinite(lmks3d).all(axis=(1, 2))
    pairs = rows[1:] & rows[:-1]
    if not pairs.any():
        return math.nan
    step = np.linalg.norm(np.diff(lmks3d.astype(np.float64), axis=0)[pairs], axis=-1).mean(axis=1)
    return float(np.median(step))


def mouth_opening(lmks: np.ndarray, has_face: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T,) mean inner-lip distance (:data:`INNER_LIP_PAIRS`) over face height, NaN without a face."""
    rows = _face_rows(lmks, has_face)
    out = np.full(len(lmks), np.nan)
    xy = lmks[rows, :, :2].astype(np.float64) * (width, height)
    upper, lower = (np.array(side) for side in zip(*INNER_LIP_PAIRS))
    gap = np.linalg.norm(xy[:, upper] - xy[:, lower], axis=-1).mean(axis=1)
    face = xy[:, :, 1].max(axis=1) - xy[:, :, 1].min(axis=1)
    out[rows] = gap / np.maximum(face, 1e-9)
    return out


# ---------------------------------------------------------------------------- audio / sync

def speech_envelope(samples: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """(frames,) speech energy per video frame: mean square of the 300-3000 Hz band.

    Frame ``t``'s window is one frame long, centred on the frame's timestamp ``t / fps``;
    windows past the end of the audio are 0. The filter is zero-phase (no delay). The
    energy stays linear: a log scale weighs the noise floor of pauses like speech and
    located the lips worse on the real talking clip.
    """
    wave = np.asarray(samples, np.float64).reshape(-1)
    if frames < 1:
        return np.zeros(0)
    if len(wave) < 32:
        return np.zeros(frames)
    from scipy import signal  # here: importing scipy.signal takes 0.35 s the build driver never needs

    high = min(SPEECH_BAND_HZ[1], 0.45 * sample_rate)
    sos = signal.butter(4, [SPEECH_BAND_HZ[0], high], btype="band", fs=sample_rate, output="sos")
    band = signal.sosfiltfilt(sos, wave)
    power = np.concatenate([[0.0], np.cumsum(band * band)])
    per_frame = sample_rate / fps
    centres = np.arange(frames) * per_frame
    start = np.clip(np.rint(centres - per_frame / 2), 0, len(band)).astype(np.int64)
    stop = np.clip(np.rint(centres + per_frame / 2), 0, len(band)).astype(np.int64)
    count = stop - start
    return np.where(count > 0, (power[stop] - power[start]) / np.maximum(count, 1), 0.0)


def _lagged_correlations(mouth: np.ndarray, energy: np.ndarray, max_offset: int) -> np.ndarray:
    """Pearson correlation of ``mouth[t]`` with ``energy[t + k]`` for ``k = -max_offset..max_offset``."""
    frames = len(mouth)
    out = np.zeros(2 * max_offset + 1)
    for i, k in enumerate(range(-max_offset, max_offset + 1)):
        x = mouth[max(0, -k):frames - max(0, k)]
        y = energy[max(0, k):frames + min(0, k)]
        x, y = x - x.mean(), y - y.mean()
        norm = math.sqrt(float(x @ x) * float(y @ y))
        out[i] = float(x @ y) / norm if norm > 0 else 0.0
    return out


def _null_correlations(mouth: np.ndarray, energy: np.ndarray, max_offset: int) -> np.ndarray:
    """Circular correlations at offsets outside ``+-max_offset``: the two signals mis-paired."""
    frames = len(mouth)
    x = (mouth - mouth.mean()) / mouth.std()
    y = (energy - energy.mean()) / energy.std()
    circular = np.fft.irfft(np.conj(np.fft.rfft(x)) * np.fft.rfft(y), n=frames) / frames
    lag = np.arange(frames)
    return circular[np.minimum(lag, frames - lag) > max_offset]


def _sync_note(mouth: np.ndarray, energy: np.ndarray, seen: np.ndarray, fps: float) -> str | None:
    """Why a weight-free estimate on these signals is not reliable (``None`` when it is)."""
    seconds = len(mouth) / fps
    if seconds < SYNC_MIN_SECONDS:
        return (f"clip shorter than {SYNC_MIN_SECONDS:g} s ({seconds:.1f} s): "
                "weight-free sync estimate is uncertain")
    if seen.mean() < SYNC_MIN_FACE_RATE:
        return f"mouth seen in only {seen.mean():.0%} of frames: sync estimate is uncertain"
    low, high = np.percentile(mouth[seen], [5, 95])
    if high - low < SYNC_MIN_MOUTH_RANGE:
        return "too little mouth motion for a sync estimate"
    if np.percentile(energy, 95) < SYNC_SILENCE_ENERGY:
        return "audio is silent: no sync estimate"
    return None


def estimate_sync(mouth: np.ndarray, envelope: np.ndarray, *, max_offset: int = 15,
                  fps: float = 30.0) -> SyncEstimate:
    """Offset (frames) between lips and audio, from the correlation of mouth opening and speech energy.

    ``mouth`` may hold NaN (frames without a face; interpolated over). With no usable
    signal (no face, a constant mouth or silent audio) the offset is 0, the scores NaN and
    ``reliable`` False with a note.
    """
    frames = min(len(mouth), len(envelope))
    mouth = np.asarray(mouth, np.float64)[:frames]
    energy = np.asarray(envelope, np.float64)[:frames]
    seen = np.isfinite(mouth)
    if seen.sum() < 2 or np.ptp(mouth[seen]) == 0 or np.ptp(energy) == 0:
        reason = "no face to measure the mouth" if not seen.any() else (
            "audio is silent: no sync estimate" if frames and np.ptp(energy) == 0 else "no mouth motion to measure")
        return SyncEstimate(0, math.nan, math.nan, False, reason)
    mouth_filled = fill_gaps(mouth, seen)
    span = max(1, min(max_offset, (frames - 1) // 3))
    scores = _lagged_correlations(mouth_filled, energy, span)
    best = int(np.argmax(scores))
    null = _null_correlations(mouth_filled, energy, span)
    spread = float(null.std()) if len(null) > 1 else 0.0
    confidence = (scores[best] - float(null.mean())) / spread if spread > 0 else math.nan
    note = _sync_note(mouth, energy, seen, fps)
    return SyncEstimate(best - span, float(confidence), float(scores[span]), note is None, note)


def shift_audio(samples: np.ndarray, offset_frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Move the audio EARLIER by ``offset_frames`` video frames (later if negative); same length, zero padded.

    Applying the measured :attr:`SyncEstimate.offset_frames` removes it (``--fix-sync``).
    """
    samples = np.asarray(samples)
    shift = int(round(offset_frames * sample_rate / fps))
    out = np.zeros_like(samples)
    if shift >= 0:
        out[:max(0, len(samples) - shift)] = samples[shift:]
    else:
        out[-shift:] = samples[:len(samples) + shift]
    return out


# ---------------------------------------------------------------------------- video pass

def _scenedetect():
    try:
        import scenedetect
    except ImportError as exc:
        raise ImportError(
            "scene cut detection needs PySceneDetect: run scripts/setup.sh or "
            "`pip install --no-deps scenedetect==0.7.2` (--no-deps: it requires opencv-python, "
            "which would clash with mediapipe's opencv-contrib-python)"
        ) from exc
    return scenedetect


class _VideoReader:
    """Sequential BGR frames of a video with OpenCV (one decoder thread: deterministic, fair to a 1-CPU worker)."""

    def __init__(self, video_path: str | Path) -> None:
        self.path = Path(video_path)
        self.capture = cv2.VideoCapture(str(video_path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not self.capture.isOpened():
            raise MediaError(f"cannot open video {self.path.name}")
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 30.0

    def frames(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok:
                    return
                yield frame
        finally:
            self.capture.release()


class SceneCutFinder:
    """PySceneDetect's ContentDetector fed frame by frame, each resized to :data:`SCENE_WIDTH`.

    Feed it from any decode loop (``rgb=True`` for RGB frames, e.g. decord's) to share one
    decode with other work; :func:`clip_quality` feeds it from its own.
    """

    def __init__(self, fps: float, threshold: float = 27.0, min_scene_frames: int = 15, *, rgb: bool = False) -> None:
        scenedetect = _scenedetect()
        self.timecode = scenedetect.FrameTimecode
        self.detector = scenedetect.ContentDetector(threshold=threshold, min_scene_len=min_scene_frames)
        self.fps = fps
        self.rgb = rgb
        self.count = 0
        self.cuts: list = []

    def add(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if width > SCENE_WIDTH:  # bilinear, as PySceneDetect's own downscaling
            size = (SCENE_WIDTH, max(1, round(height * SCENE_WIDTH / width)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        if self.rgb:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        self.cuts += self.detector.process_frame(self.timecode(self.count, self.fps), frame)
        self.count += 1

    def result(self) -> list[int]:
        """Frame indices ``0 < i < frames seen`` where a new shot starts (call once, after the last frame)."""
        self.cuts += self.detector.post_process(self.timecode(self.count, self.fps))
        return sorted({int(cut.frame_num) for cut in self.cuts if 0 < int(cut.frame_num) < self.count})


class FaceImageStats:
    """Laplacian variance and mean grey level on the face box of every ``step``-th frame fed to it."""

    def __init__(self, step: int = IMAGE_STEP, *, rgb: bool = False) -> None:
        if step < 1:
            raise ValueError(f"image metrics step must be >= 1, got {step}")
        self.step = step
        self.to_grey = cv2.COLOR_RGB2GRAY if rgb else cv2.COLOR_BGR2GRAY
        self.count = 0
        self.sharpness: list[float] = []
        self.brightness: list[float] = []

    def wants_next(self) -> bool:
        """Whether the next frame fed is one that is measured (the others need no face box)."""
        return self.count % self.step == 0

    def add(self, frame: np.ndarray, box: np.ndarray | None) -> None:
        """Feed the next frame and its face box (``x0, y0, x1, y1``; empty without a face;
        ``None`` only for a frame :meth:`wants_next` said is not measured)."""
        index, self.count = self.count, self.count + 1
        if index % self.step:
            return
        x0, y0, x1, y1 = (int(v) for v in box)  # type: ignore[union-attr]
        if x1 - x0 < 3 or y1 - y0 < 3:
            return
        grey = cv2.cvtColor(frame[y0:y1, x0:x1], self.to_grey)
        self.sharpness.append(float(cv2.Laplacian(grey, cv2.CV_64F).var()))
        self.brightness.append(float(grey.mean()))

    def result(self) -> tuple[float, float]:
        """``(median sharpness, median brightness)``; NaN when no sampled frame had a face box."""
        if not self.sharpness:
            return math.nan, math.nan
        return float(np.median(self.sharpness)), float(np.median(self.brightness))


class FrameScores:
    """The scores that need decoded frames (scene cuts, sharpness, brightness), fed frame by frame.

    The face stage feeds it from its own decode loop (``rgb=True``, decord frames) with each
    frame's landmarks, so a clip is decoded once for both; :func:`scan_video` feeds it from
    an OpenCV decode when the frames are not at hand.
    """

    def __init__(self, fps: float, scene_threshold: float = 27.0, min_scene_frames: int = 15,
                 step: int = IMAGE_STEP, *, rgb: bool = False) -> None:
        self.cuts = SceneCutFinder(fps, scene_threshold, min_scene_frames, rgb=rgb)
        self.stats = FaceImageStats(step, rgb=rgb)
        self.width = self.height = 0

    def add(self, frame: np.ndarray, lmks: np.ndarray | None) -> None:
        """Feed the next frame with its normalised landmarks (``None`` without a face)."""
        self.height, self.width = frame.shape[:2]
        self.cuts.add(frame)
        if not self.stats.wants_next():
            self.stats.add(frame, None)
            return
        found = np.array([lmks is not None])
        rows = lmks[None] if lmks is not None else np.full((1, 1, 3), np.nan)
        self.stats.add(frame, face_boxes(rows, found, self.width, self.height)[0])

    def result(self) -> dict[str, object]:
        """``scene_cuts``, ``sharpness``, ``brightness`` and the frame ``width``/``height`` (call once)."""
        sharpness, brightness = self.stats.result()
        return {"scene_cuts": self.cuts.result(), "sharpness": sharpness, "brightness": brightness,
                "width": self.width, "height": self.height}


def scan_video(video_path: str | Path, lmks: np.ndarray, has_face: np.ndarray, fps: float, *,
               scene_threshold: float = 27.0, min_scene_frames: int = 15) -> dict[str, object]:
    """:class:`FrameScores` of a video decoded with OpenCV, given its per-frame landmarks."""
    scores = FrameScores(fps, scene_threshold, min_scene_frames)
    has_face = np.asarray(has_face, bool)
    for index, frame in enumerate(_VideoReader(video_path).frames()):
        found = index < len(has_face) and has_face[index]
        scores.add(frame, lmks[index] if found else None)
    return scores.result()


def detect_scene_cuts(video_path: str | Path, *, threshold: float = 27.0, min_scene_frames: int = 15) -> list[int]:
    """Frame indices ``0 < i < T`` where a new shot starts (PySceneDetect ContentDetector).

    ``threshold`` and ``min_scene_frames`` are ContentDetector's ``threshold`` and
    ``min_scene_len``; frames are downscaled to :data:`SCENE_WIDTH` first.
    """
    reader = _VideoReader(video_path)
    finder = SceneCutFinder(reader.fps, threshold, min_scene_frames)
    for frame in reader.frames():
        finder.add(frame)
    return finder.result()


def image_metrics(video_path: str | Path, boxes: np.ndarray, *, step: int = IMAGE_STEP) -> tuple[float, float]:
    """``(sharpness, brightness)`` on the face boxes (see :func:`face_boxes`) of every ``step``-th frame.

    Sharpness: median variance of the Laplacian of the grey face box (higher = sharper;
    it depends on the face's size in pixels). Brightness: median of the box's mean grey
    level, 0..255. NaN when no sampled frame has a face box.
    """
    stats = FaceImageStats(step)
    for index, frame in enumerate(_VideoReader(video_path).frames()):
        stats.add(frame, boxes[index] if index < len(boxes) else np.zeros(4, np.int64))
    return stats.result()


# ---------------------------------------------------------------------------- all scores

def clip_quality(video_path: str | Path, lmks: np.ndarray, lmks3d: np.ndarray, pose6d: np.ndarray,
                 has_face: np.ndarray, audio_samples: np.ndarray | None, sample_rate: int,
                 fps: float, *, scene_threshold: float = 27.0, min_scene_frames: int = 15,
                 max_sync_offset: int = 15, frame_scores: dict[str, object] | None = None) -> QualityScores:
    """All scores of one clip.

    ``frame_scores`` (from a :class:`FrameScores` fed during the face stage's decode) saves
    decoding the video again; without it the video is decoded once here (:func:`scan_video`).
    Units: ``face_rate`` fraction of frames with a face; ``face_px_*`` face height in
    pixels of the video; ``*_range_deg`` degrees (:func:`pose_ranges`); ``jitter`` canonical
    cm per frame (:func:`landmark_jitter`); ``sharpness`` / ``brightness`` as
    :func:`image_metrics`; ``scene_cuts`` frame indices; ``sync_*`` from :func:`estimate_sync`
    (all ``None`` without audio).
    """
    has_face = np.asarray(has_face, bool)
    if frame_scores is None:
        frame_scores = scan_video(video_path, lmks, has_face, fps, scene_threshold=scene_threshold,
                                  min_scene_frames=min_scene_frames)
    width, height = int(frame_scores["width"]), int(frame_scores["height"])
    heights = face_heights_px(lmks, has_face, height)
    seen = np.isfinite(heights)
    sync: SyncEstimate | None = None
    if audio_samples is not None and len(audio_samples):
        mouth = mouth_opening(lmks, has_face, width, height)
        envelope = speech_envelope(audio_samples, sample_rate, fps, len(has_face))
        sync = estimate_sync(mouth, envelope, max_offset=max_sync_offset, fps=fps)
    return QualityScores(
        face_rate=float(has_face.mean()) if len(has_face) else 0.0,
        face_px_median=float(np.median(heights[seen])) if seen.any() else math.nan,
        face_px_min=float(heights[seen].min()) if seen.any() else math.nan,
        **pose_ranges(pose6d, has_face),
        jitter=landmark_jitter(lmks3d, has_face),
        sharpness=_float_or_nan(frame_scores["sharpness"]),
        brightness=_float_or_nan(frame_scores["brightness"]),
        scene_cuts=tuple(int(c) for c in frame_scores["scene_cuts"]),  # type: ignore[union-attr]
        sync_offset=None if sync is None else sync.offset_frames,
        sync_conf=None if sync is None or math.isnan(sync.confidence) else sync.confidence,
        sync_score0=None if sync is None or math.isnan(sync.score_at_zero) else sync.score_at_zero,
        sync_note="no audio" if sync is None else sync.note,
    )


def _float_or_nan(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]
