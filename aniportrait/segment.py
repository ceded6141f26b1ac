"""Automatic clips of an unannotated video: where its shots and faces are, and one crop per clip.

A video of the ``folder`` dataset comes without clip spans or crops, so before the clip
stages run, each source gets one cheap pass (:func:`scan_source`):

* ffmpeg decodes it once at :data:`SCAN_FPS` frames a second, scaled to ``scan_width``
  pixels wide (timestamps restart at zero, as in :mod:`aniportrait.media.cut`, so a scan
  frame ``k`` is source second ``k / SCAN_FPS`` of the clip stage's timeline);
* every scan frame feeds PySceneDetect's ContentDetector (:class:`~aniportrait.quality.SceneCutFinder`);
* every ``DETECT_STEP``-th scan frame goes to MediaPipe's face detector (BlazeFace, read
  out of the FaceLandmarker bundle as :mod:`aniportrait.speakers` does); the biggest face is kept;
* the audio's loudness (RMS of 16 kHz mono) is kept per :data:`ENERGY_WINDOW_S`.

The scan is a plain JSON-able :class:`SourceScan` (the build caches it per source), and
:func:`plan_segments` turns it into clips, a pure function of the scan and the
:class:`SegmentSettings`:

1. the video is cut at every scene cut (each side moved :data:`CUT_MARGIN_FRAMES` scan
   frames away from it, as is the video's end) and wherever no face is found for more than ``face_gap_s``;
   a file that stops decoding before its declared end (cut short, corrupt) ends where the
   first of its streams stops (``SourceScan.decoded_s``; the build reports the rest);
2. a segment shorter than ``min_clip_s`` is dropped; one longer than ``max_clip_s`` is
   split at the quietest point of the audio within the last :data:`SPLIT_WINDOW_S` before
   the limit (so a word is not cut in half), or at the limit when there is no audio;
3. each clip gets one square crop box for all its frames (``crop="face"``): centred on the
   median centre of its face boxes, of side ``crop_scale`` (1.5, the expansion of the
   official ``crop_face``) times the 90th percentile of the face box's larger side. A box
   that reaches beyond the frame stays whole and the outside is black, as the official
   code pads it (``copyMakeBorder`` with zeros), so the face stays centred in every clip.
   (The official code also takes a face covering 15% of the frame or more as the whole
   frame's centre square; that is left out here, since it moves a large face off-centre.)
   ``crop="none"`` gives no box (the clip stage centre-crops the frame to fill the square).

Cost (one CPU of the 2-core development machine): decoding dominates; see the README's
"Your own videos" section for the measured seconds per source second.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.matplotlib_dir import keep_matplotlib_in_temp
from aniportrait.media.probe import MediaError, check_tool, probe
from aniportrait.speakers import bundled_detector

SCAN_FPS = 10.0
"""Scan frames per second: scene cuts are placed to 0.1 s, faces looked for 5 times a second."""
DETECT_STEP = 2
"""The face detector sees every ``DETECT_STEP``-th scan frame."""
SCENE_MIN_FRAMES = 5
"""Shortest shot (scan frames) the scene detector reports: a 1 s black-out gives both of its cuts."""
CUT_MARGIN_FRAMES = 1
"""Scan frames left out on each side of a scene cut, so no clip starts or ends on the other shot,
and at the end of the video (its last scan frame stands for up to 1/SCAN_FPS s of video that a
clip of its own frame rate may not have)."""
ENERGY_WINDOW_S = 0.05
"""Audio loudness is kept per window of this many seconds."""
UNDECODED_TAIL_S = 1.0
"""A video that decodes to more than this many seconds short of the duration it declares is
truncated or corrupt there (:func:`decoded_end`); less is the usual slack between a
container's and its video stream's durations."""
SPLIT_WINDOW_S = 5.0
"""A long segment is split at the quietest point of at most this many seconds before ``max_clip_s``."""
SMOOTH_WINDOWS = 3
"""Energy windows averaged before looking for the quietest point (150 ms: a pause, not a stop consonant)."""
AUDIO_RATE = 16_000
CROP_RULES = ("face", "none")


@dataclass(frozen=True, slots=True)
class SegmentSettings:
    """How a source becomes clips (``--min-clip-s``, ``--max-clip-s``, ``--crop``)."""

    min_clip_s: float = 2.0
    max_clip_s: float = 30.0
    crop: str = "face"
    crop_scale: float = 1.5
    face_gap_s: float = 0.5
    scan_width: int = 256
    scene_threshold: float = 27.0

    def __post_init__(self) -> None:
        if self.crop not in CROP_RULES:
            raise ValueError(f"--crop must be one of {', '.join(CROP_RULES)}, got {self.crop!r}")
        if not 0 < self.min_clip_s < self.max_clip_s:
            raise ValueError(f"need 0 < --min-clip-s < --max-clip-s, got {self.min_clip_s} and {self.max_clip_s}")
        if self.crop_scale < 1.0 or self.face_gap_s < 0 or self.scan_width < 32:
            raise ValueError(f"bad segment settings {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scan_settings(self) -> dict[str, Any]:
        """What shapes a :class:`SourceScan` (the rest only shapes the plan)."""
        return {"scan_width": self.scan_width, "scene_threshold": self.scene_threshold, "scan_fps": SCAN_FPS,
                "detect_step": DETECT_STEP, "scene_min_frames": SCENE_MIN_FRAMES, "energy_window_s": ENERGY_WINDOW_S,
                "undecoded_tail_s": UNDECODED_TAIL_S}


@dataclass(frozen=True, slots=True)
class SourceScan:
    """What one pass over a source found (source pixels, scan-frame indices at :data:`SCAN_FPS`).

    ``faces`` holds ``[k, x0, y0, x1, y1]`` of the biggest face on each sampled frame ``k``
    that has one; ``sampled`` how many frames were sampled (every ``DETECT_STEP``-th);
    ``energy`` the audio RMS (int16 scale) per :data:`ENERGY_WINDOW_S`, ``None`` without audio;
    ``decoded_s`` where the file stops decoding when a stream of it does so more than
    :data:`UNDECODED_TAIL_S` before its declared end (the earliest end of any stream then),
    ``None`` when it decodes to its end.
    """

    width: int
    height: int
    duration_s: float
    frames: int
    scene_cuts: list[int]
    faces: list[list[int]]
    energy: list[int] | None
    decoded_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceScan:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Segment:
    """One automatic clip: its span in source seconds, its crop box ``[x0, y0, x1, y1]`` in
    source pixels (``None``: centre crop) and why it starts and ends where it does
    (``start``, ``scene_cut``, ``face_lost``/``face_found``, ``max_clip``, ``end``)."""

    start_s: float
    end_s: float
    box: list[int] | None
    starts_at: str
    ends_at: str


def scan_source(path: str | Path, model_path: str | Path, settings: SegmentSettings) -> SourceScan:
    """One pass over ``path`` (see the module docstring); raises :class:`MediaError` when unreadable."""
    from aniportrait.quality import SceneCutFinder

    info = probe(path)
    scan_w = min(settings.scan_width, info.width) // 2 * 2
    scan_h = max(2, round(info.height * scan_w / info.width / 2) * 2)
    sx, sy = info.width / scan_w, info.height / scan_h
    finder = SceneCutFinder(SCAN_FPS, settings.scene_threshold, SCENE_MIN_FRAMES, rgb=True)
    faces: list[list[int]] = []
    frames = 0
    with _FaceDetector(model_path) as detector:
        for k, frame in enumerate(_scan_frames(path, scan_w, scan_h)):
            finder.add(frame)
            frames = k + 1
            if k % DETECT_STEP == 0:
                box = detector.biggest(frame)
                if box is not None:
                    x0, y0, x1, y1 = box
                    faces.append([k, round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)])
    if frames == 0:
        raise MediaError(f"{Path(path).name}: no video frame could be decoded", "unreadable_source")
    duration = info.duration_s if info.duration_s > 0 else frames / SCAN_FPS
    energy = _audio_energy(path) if info.has_audio else None
    return SourceScan(info.width, info.height, round(duration, 6), frames, finder.result(), faces, energy,
                      decoded_end(frames, energy, duration, info.audio_duration_s))


def decoded_end(frames: int, energy: list[int] | None, video_s: float, audio_s: float | None) -> float | None:
    """Where the file stops decoding (see :class:`SourceScan`), from what each stream decoded."""
    ends = [(frames / SCAN_FPS, video_s)]
    if energy is not None and audio_s is not None:  # (Matroska declares no stream durations)
        ends.append((len(energy) * ENERGY_WINDOW_S, audio_s))
    if all(declared - decoded <= UNDECODED_TAIL_S for decoded, declared in ends):
        return None
    return round(min(decoded for decoded, _ in ends), 6)


def _scan_frames(path: str | Path, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames of ``path`` at :data:`SCAN_FPS`, ``width`` x ``height``, streamed from one ffmpeg."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-an",
            "-vf", f"setpts=PTS-STARTPTS,fps={SCAN_FPS:g},scale={width}:{height}:flags=area",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    size = width * height * 3
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while len(chunk := proc.stdout.read(size)) == size:
            yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
        proc.stdout.close()
        stderr = proc.stderr.read() if proc.stderr else b""
        proc.wait()
    check_tool("ffmpeg", f"scan {Path(path).name}", proc.returncode, stderr, "unreadable_source", [str(path)])


def _audio_energy(path: str | Path) -> list[int]:
    """RMS (int16 scale) of the first audio track, 16 kHz mono, per :data:`ENERGY_WINDOW_S`."""
    args = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1",
            "-ar", str(AUDIO_RATE), "-f", "s16le", "-"]
    done = subprocess.run(args, capture_output=True, check=False)
    check_tool("ffmpeg", f"read the audio of {Path(path).name}", done.returncode, done.stderr, "unreadable_source",
               [str(path)])
    samples = np.frombuffer(done.stdout, np.int16).astype(np.float64)
    window = round(ENERGY_WINDOW_S * AUDIO_RATE)
    n = len(samples) // window
    rms = np.sqrt((samples[: n * window].reshape(n, window) ** 2).mean(axis=1)) if n else np.zeros(0)
    return [int(round(v)) for v in rms]


class _FaceDetector:
    """MediaPipe's BlazeFace from the FaceLandmarker bundle, IMAGE mode (every face of a frame)."""

    def __init__(self, model_path: str | Path) -> None:
        keep_matplotlib_in_temp()
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=bundled_detector(model_path)),
                                             running_mode=vision.RunningMode.IMAGE, min_detection_confidence=0.5)
        self.detector = vision.FaceDetector.create_from_options(options)

    def biggest(self, frame_rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """``x0, y0, x1, y1`` (scan pixels) of the biggest face, or ``None``."""
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame_rgb))
        boxes = [d.bounding_box for d in self.detector.detect(image).detections]
        if not boxes:
            return None
        b = max(boxes, key=lambda b: (b.width * b.height, -b.origin_x, -b.origin_y))
        return b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height

    def __enter__(self) -> _FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detector.close()


# ---------------------------------------------------------------------------- the plan (pure)


def undecoded_tail(scan: SourceScan) -> tuple[float, float] | None:
    """``(start_s, end_s)`` of the end of the video that does not decode (a file cut short, or
    corrupt from there on), or ``None`` when it decodes to its declared end."""
    return None if scan.decoded_s is None else (scan.decoded_s, scan.duration_s)


def plan_segments(scan: SourceScan, settings: SegmentSettings) -> list[Segment]:
    """The clips of a scanned source, in time order (see the module docstring)."""
    faces = {row[0]: row[1:] for row in scan.faces}
    decodes_to = scan.duration_s if scan.decoded_s is None else scan.decoded_s
    end_frame = min(scan.frames, int(np.floor(decodes_to * SCAN_FPS + 1e-6)) or scan.frames)
    bounds = [0, *(c for c in scan.scene_cuts if 0 < c < end_frame), end_frame]
    segments: list[Segment] = []
    for shot_start, shot_end in zip(bounds, bounds[1:]):
        for first, last, starts_at, ends_at in _face_runs(faces, shot_start, shot_end, end_frame, settings.face_gap_s):
            if first == shot_start and shot_start > 0:
                first += CUT_MARGIN_FRAMES
            if last == shot_end:  # a cut, or the end, which the scan places to a frame only
                last -= CUT_MARGIN_FRAMES
            start_s, end_s = first / SCAN_FPS, min(last / SCAN_FPS, scan.duration_s)
            if end_s - start_s < settings.min_clip_s - 1e-9:
                continue
            pieces = _split_long(start_s, end_s, scan.energy, settings)
            for i, (a, b) in enumerate(pieces):
                box = _crop_box(faces, a, b, scan.width, scan.height, settings)
                segments.append(Segment(round(a, 6), round(b, 6), box, starts_at if i == 0 else "max_clip",
                                        ends_at if i == len(pieces) - 1 else "max_clip"))
    return segments


def _face_runs(faces: dict[int, list[int]], start: int, end: int, end_frame: int, gap_s: float
               ) -> list[tuple[int, int, str, str]]:
    """Runs ``[first, last)`` of scan frames with a face within the shot ``[start, end)`` of a
    source of ``end_frame`` frames, gaps up to ``gap_s`` bridged, and why each starts and ends."""
    seen = [k for k in range(start + (-start) % DETECT_STEP, end, DETECT_STEP) if k in faces]
    if not seen:
        return []
    runs: list[list[int]] = [[seen[0], seen[0]]]
    for k in seen[1:]:
        if (k - runs[-1][1] - DETECT_STEP) / SCAN_FPS > gap_s:
            runs.append([k, k])
        else:
            runs[-1][1] = k
    out = []
    for first, last in runs:
        lo = start if first - start < DETECT_STEP else first
        hi = end if end - (last + 1) < DETECT_STEP else last + 1
        starts_at = "face_found" if lo != start else "start" if start == 0 else "scene_cut"
        ends_at = "face_lost" if hi != end else "end" if end == end_frame else "scene_cut"
        out.append((lo, hi, starts_at, ends_at))
    return out


def _split_long(start_s: float, end_s: float, energy: list[int] | None, settings: SegmentSettings
                ) -> list[tuple[float, float]]:
    """``[start_s, end_s)`` in pieces of at most ``max_clip_s``, each cut at the quietest point near the limit."""
    pieces = []
    while end_s - start_s > settings.max_clip_s + 1e-9:
        hi = min(start_s + settings.max_clip_s, end_s - settings.min_clip_s)
        lo = max(start_s + settings.min_clip_s, start_s + settings.max_clip_s - SPLIT_WINDOW_S)
        cut = _quietest(energy, lo, hi) if lo < hi else max(hi, start_s + settings.min_clip_s)
        pieces.append((start_s, cut))
        start_s = cut
    pieces.append((start_s, end_s))
    return pieces


def _quietest(energy: list[int] | None, lo: float, hi: float) -> float:
    """The start of the energy window within ``[lo, hi]`` whose smoothed loudness is lowest (ties: the
    quieter window itself, then the latest); ``hi`` without audio."""
    first, last = int(np.ceil(lo / ENERGY_WINDOW_S)), int(np.floor(hi / ENERGY_WINDOW_S))
    if energy is None or last <= first or first >= len(energy):
        return hi
    kernel = np.ones(SMOOTH_WINDOWS) / SMOOTH_WINDOWS
    raw = np.asarray(energy, np.float64)
    smooth = np.convolve(raw, kernel, mode="same")[first: last + 1]
    raw = raw[first: last + 1]
    best = int(np.lexsort((-np.arange(len(smooth)), raw, smooth))[0])
    return round((first + best) * ENERGY_WINDOW_S, 6)


def _crop_box(faces: dict[int, list[int]], start_s: float, end_s: float, width: int, height: int,
              settings: SegmentSettings) -> list[int] | None:
    """The square crop box of one clip (see the module docstring), ``None`` for ``crop="none"``."""
    if settings.crop == "none":
        return None
    lo, hi = start_s * SCAN_FPS, end_s * SCAN_FPS
    boxes = np.array([b for k, b in faces.items() if lo <= k < hi], np.float64).reshape(-1, 4)
    if not len(boxes):
        return None
    cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
    cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2))
    size = float(np.percentile(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 90))
    side = max(2, int(round(size * settings.crop_scale)) // 2 * 2)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return [x0, y0, x0 + side, y0 + side]  # may reach beyond the frame: padded black by the clip stage
