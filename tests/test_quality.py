"""Quality scores on real media: a/v sync, scene cuts, sharpness, face metrics, NaN safety."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aniportrait.audio import load_audio
from aniportrait.crop import PixelBox
from aniportrait.face import DEFAULT_MODEL, FaceArrays, face_arrays
from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings
from aniportrait.media.cut import CutSettings, cut_clip, plan_cut
from aniportrait.media.encode import encode_rgb_lossless
from aniportrait.media.probe import probe
from aniportrait.quality import (
    SYNC_CONF_THRESHOLD,
    SYNC_MIN_SECONDS,
    FrameScores,
    QualityScores,
    clip_quality,
    detect_scene_cuts,
    estimate_sync,
    face_boxes,
    face_heights_px,
    image_metrics,
    landmark_jitter,
    mouth_opening,
    pose_ranges,
    scan_video,
    shift_audio,
    speech_envelope,
)

RATE = 16_000
FPS = 30.0


@dataclass
class Clip:
    """A fixture cut like the clip stage cuts it (512x512, 30 fps, 16 kHz wav) with its face arrays."""

    video: Path
    audio: np.ndarray
    face: FaceArrays

    @property
    def mouth(self) -> np.ndarray:
        return mouth_opening(self.face.lmks, self.face.has_face, 512, 512)

    def sync(self, audio: np.ndarray):
        return estimate_sync(self.mouth, speech_envelope(audio, RATE, FPS, len(self.face.has_face)), fps=FPS)


def track(video: Path) -> FaceArrays:
    return face_arrays(FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL), mode="video")).track(video))


def cut_fixture(source: Path, folder: Path) -> Clip:
    """The whole ``source``, centre-cropped to a square, with the project's own clip cutter."""
    info = probe(source)
    side = min(info.width, info.height)
    box = PixelBox((info.width - side) // 2, (info.height - side) // 2, side, side)
    plan = plan_cut(0.0, info.duration_s, box, CutSettings(), source_duration_s=info.duration_s, with_audio=True)
    video, wav = folder / f"{source.stem}.mp4", folder / f"{source.stem}.wav"
    cut_clip(source, video, wav, plan, CutSettings())
    return Clip(video, load_audio(wav), track(video))


def delayed(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio delayed by ``frames`` video frames (advanced when negative)."""
    return shift_audio(audio, -frames, FPS, RATE)


@pytest.fixture(scope="module")
def lyl(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return cut_fixture(media_dir / "talking_lyl_7s.mp4", tmp_path_factory.mktemp("lyl"))


@pytest.fixture(scope="module")
def hdtf(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return cut_fixture(media_dir / "talking_hdtf_radio10_0.mp4", tmp_path_factory.mktemp("hdtf"))


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def join_videos(first: Path, second: Path, frames: int, out: Path) -> Path:
    """``frames`` frames of ``first`` then ``frames`` of ``second`` (512x512, 30 fps): one hard cut."""
    ffmpeg("-i", str(first), "-i", str(second), "-filter_complex",
           f"[0:v]trim=end_frame={frames},setpts=PTS-STARTPTS[a];"
           f"[1:v]fps=30,scale=512:512,setsar=1,trim=end_frame={frames},setpts=PTS-STARTPTS[b];"
           "[a][b]concat=n=2:v=1:a=0,format=yuv420p[v]",
           "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-threads", "1", str(out))
    return out


# ------------------------------------------------------------------------------ sync, real

def test_lips_and_audio_of_the_talking_clip_are_in_sync(lyl: Clip) -> None:
    est = lyl.sync(lyl.audio)
    assert est.reliable and est.note is None
    assert abs(est.offset_frames) <= 1, est
    assert est.confidence >= SYNC_CONF_THRESHOLD, est


@pytest.mark.parametrize("frames", [3, -3, 6, -6])
def test_measured_offset_follows_a_shifted_audio(lyl: Clip, frames: int) -> None:
    """Delaying the audio by k frames moves the estimate by k (sign included); offset 0 scores best unshifted."""
    original = lyl.sync(lyl.audio)
    shifted = lyl.sync(delayed(lyl.audio, frames))
    assert abs(shifted.offset_frames - (original.offset_frames + frames)) <= 1, (original, shifted)
    assert original.score_at_zero > shifted.score_at_zero, (original, shifted)
    assert shifted.confidence >= SYNC_CONF_THRESHOLD and shifted.reliable, shifted


def test_fix_sync_removes_the_measured_offset(lyl: Clip) -> None:
    late = delayed(lyl.audio, 6)
    measured = lyl.sync(late)
    fixed = shift_audio(late, measured.offset_frames, FPS, RATE)
    again = lyl.sync(fixed)
    assert abs(again.offset_frames) <= 1, (measured, again)
    assert again.score_at_zero > measured.score_at_zero


def test_audio_of_other_speech_gets_a_low_confidence(lyl: Clip) -> None:
    """Mis-paired audio (reversed; rolled by half the clip) stays below the documented threshold."""
    for other in (lyl.audio[::-1].copy(), np.roll(lyl.audio, len(lyl.audio) // 2)):
        est = lyl.sync(other)
        assert est.confidence < SYNC_CONF_THRESHOLD, est


def test_short_real_clip_is_reported_but_not_reliable(hdtf: Clip) -> None:
    est = hdtf.sync(hdtf.audio)
    assert len(hdtf.face.has_face) / FPS < SYNC_MIN_SECONDS
    assert -15 <= est.offset_frames <= 15 and math.isfinite(est.confidence) and math.isfinite(est.score_at_zero)
    assert not est.reliable
    assert est.note == "clip shorter than 4 s (2.1 s): weight-free sync estimate is uncertain"
    scores, again = (clip_quality(hdtf.video, hdtf.face.lmks, hdtf.face.lmks3d, hdtf.face.pose6d,
                                  hdtf.face.has_face, hdtf.audio, RATE, FPS) for _ in range(2))
    assert json.dumps(scores.to_dict()) == json.dumps(again.to_dict())  # deterministic
    assert (scores.sync_offset, scores.sync_conf, scores.sync_note) == (est.offset_frames, est.confidence, est.note)
    assert scores.face_rate == 1.0 and scores.scene_cuts == ()


# ------------------------------------------------------------------------------ video, real

def test_one_cut_where_two_real_videos_are_joined(lyl: Clip, media_dir: Path, tmp_path: Path) -> None:
    joined = join_videos(lyl.video, media_dir / "head_pose_ref.mp4", 60, tmp_path / "joined.mp4")
    cuts = detect_scene_cuts(joined)
    assert len(cuts) == 1 and abs(cuts[0] - 60) <= 1, cuts
    assert detect_scene_cuts(joined) == cuts


def test_frame_scores_from_the_face_stage_decode_match_a_separate_scan(lyl: Clip, media_dir: Path,
                                                                         tmp_path: Path) -> None:
    """The build gathers cuts and image metrics inside the face tracker's decode (decord, RGB):
    same cuts and near-equal image metrics as an OpenCV decode of its own."""
    joined = join_videos(lyl.video, media_dir / "head_pose_ref.mp4", 45, tmp_path / "joined.mp4")
    hook = FrameScores(FPS, rgb=True)
    face = face_arrays(FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL), mode="video"))
                       .track(joined, on_frame=hook.add))
    shared = hook.result()
    separate = scan_video(joined, face.lmks, face.has_face, FPS)
    assert shared["scene_cuts"] == separate["scene_cuts"] and len(shared["scene_cuts"]) == 1
    assert (shared["width"], shared["height"]) == (separate["width"], separate["height"]) == (512, 512)
    assert shared["sharpness"] == pytest.approx(separate["sharpness"], rel=0.05)
    assert shared["brightness"] == pytest.approx(separate["brightness"], abs=1.0)


@pytest.mark.parametrize("name", ["talking_lyl_7s.mp4", "head_pose_ref.mp4"])
def test_a_single_real_clip_has_no_cut(media_dir: Path, name: str) -> None:
    assert detect_scene_cuts(media_dir / name) == []


def test_missing_scenedetect_names_the_fix(lyl: Clip, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # what an environment without it gives
    with pytest.raises(ImportError, match=r"run scripts/setup.sh or `pip install --no-deps scenedetect==0.7.2`"):
        detect_scene_cuts(lyl.video)


def test_blurred_copy_is_less_sharp(lyl: Clip, tmp_path: Path) -> None:
    blurred = tmp_path / "blurred.mp4"
    ffmpeg("-i", str(lyl.video), "-vf", "gblur=sigma=2", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
           "-threads", "1", str(blurred))
    boxes = face_boxes(lyl.face.lmks, lyl.face.has_face, 512, 512)
    sharp, bright = image_metrics(lyl.video, boxes)
    soft, soft_bright = image_metrics(blurred, boxes)
    assert soft < 0.5 * sharp, (sharp, soft)
    assert abs(bright - soft_bright) < 2.0
    assert 0 < bright < 255


@pytest.mark.slow
def test_raw_portrait_source_face_metrics_are_reproducible(media_dir: Path, tmp_path: Path) -> None:
    """The face core run twice on the 1080x1920 HEVC source (its first 4 s, the HEVC stream
    copied as it is) gives identical face metrics."""
    source = tmp_path / "raw_seated_4s.mp4"
    ffmpeg("-i", str(media_dir / "raw_seated_1080x1920_hevc.mp4"), "-t", "4", "-c", "copy", str(source))
    info = probe(source)
    assert (info.width, info.height, info.video_codec, info.has_audio) == (1080, 1920, "hevc", True)
    first, second = track(source), track(source)
    scores = clip_quality(source, first.lmks, first.lmks3d, first.pose6d, first.has_face, load_audio(source),
                          RATE, 25.0)
    assert scores.face_rate == float(second.has_face.mean()) > 0.9
    heights = face_heights_px(first.lmks, first.has_face, 1920)
    assert np.array_equal(heights, face_heights_px(second.lmks, second.has_face, 1920), equal_nan=True)
    assert 200 < scores.face_px_median < 320, scores.face_px_median  # a small face, ~260 px tall
    assert scores.face_px_median == float(np.nanmedian(heights)) and scores.face_px_min == float(np.nanmin(heights))
    assert pose_ranges(second.pose6d, second.has_face) == {
        key: getattr(scores, key) for key in ("pitch_range_deg", "yaw_range_deg", "roll_range_deg")}
    assert landmark_jitter(second.lmks3d, second.has_face) == scores.jitter
    assert scores.scene_cuts == () and scores.sharpness > 0


def test_clip_without_a_face_gets_empty_scores(tmp_path: Path) -> None:
    video = tmp_path / "noise.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (20, 128, 128, 3), dtype=np.uint8)
    encode_rgb_lossless(iter(frames), 128, 128, 25, video)
    face = track(video)
    assert not face.has_face.any()
    tone = np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE).astype(np.float32)
    scores = clip_quality(video, face.lmks, face.lmks3d, face.pose6d, face.has_face, tone, RATE, 25.0)
    row = scores.to_dict()
    assert row["face_rate"] == 0.0
    for key in ("face_px_median", "face_px_min", "yaw_range_deg", "jitter", "sharpness", "brightness",
                "sync_conf", "sync_score0"):
        assert row[key] is None, key
    assert row["sync_note"] == "no face to measure the mouth"
    silent = clip_quality(video, face.lmks, face.lmks3d, face.pose6d, face.has_face, None, RATE, 25.0)
    assert silent.sync_offset is None and silent.sync_note == "no audio"
    json.dumps(row, allow_nan=False)


# ------------------------------------------------------------------------------ small functions

def test_face_functions_keep_faceless_frames_as_nan() -> None:
    lmks = np.full((3, 478, 3), np.nan, np.float32)
    lmks[1] = np.random.default_rng(1).uniform(0.25, 0.75, (478, 3))
    has_face = np.array([False, True, False])
    heights = face_heights_px(lmks, has_face, 400)
    assert np.isnan(heights[[0, 2]]).all()
    assert heights[1] == pytest.approx((lmks[1, :, 1].max() - lmks[1, :, 1].min()) * 400, rel=1e-6)
    boxes = face_boxes(lmks, has_face, 200, 400)
    assert boxes.dtype.kind == "i" and (boxes[[0, 2]] == 0).all()
    assert 50 <= boxes[1, 0] < boxes[1, 2] <= 150 and 100 <= boxes[1, 1] < boxes[1, 3] <= 300
    mouth = mouth_opening(lmks, has_face, 200, 400)
    assert np.isnan(mouth[[0, 2]]).all() and mouth[1] > 0
    assert math.isnan(landmark_jitter(np.zeros((3, 468, 3)), has_face))  # no two face frames in a row


def test_face_boxes_are_clipped_to_the_frame() -> None:
    lmks = np.zeros((1, 478, 3), np.float32)
    lmks[0, :, 0] = np.linspace(-0.2, 1.3, 478)
    lmks[0, :, 1] = np.linspace(0.1, 0.5, 478)
    assert face_boxes(lmks, np.array([True]), 100, 50).tolist() == [[0, 5, 100, 25]]


def test_landmark_jitter_is_the_median_vertex_step() -> None:
    mesh = np.zeros((4, 468, 3))
    mesh[1, :, 0] = 0.1
    mesh[2, :, 0] = 0.3
    mesh[3, :, 0] = 0.3  # steps 0.1, 0.2, 0.0 cm
    assert landmark_jitter(mesh, np.ones(4, bool)) == pytest.approx(0.1)


def test_pose_ranges_name_the_axes_and_survive_the_wrap() -> None:
    frames = 101
    pose = np.zeros((frames, 6))
    pose[:, 0] = np.linspace(-5, 5, frames)                            # pitch
    pose[:, 1] = np.linspace(-20, 20, frames)                          # yaw
    pose[:, 2] = np.where(np.arange(frames) % 2, 179.0, -179.0)        # roll across +-180
    has_face = np.ones(frames, bool)
    has_face[:10] = False
    pose[:10] = np.nan
    ranges = pose_ranges(pose, has_face)
    assert ranges["pitch_range_deg"] == pytest.approx(np.ptp(np.percentile(pose[10:, 0], [5, 95])))
    assert ranges["yaw_range_deg"] == pytest.approx(np.ptp(np.percentile(pose[10:, 1], [5, 95])))
    assert ranges["roll_range_deg"] == pytest.approx(2.0)
    assert all(math.isnan(v) for v in pose_ranges(pose, np.zeros(frames, bool)).values())


def test_shift_audio_moves_earlier_and_round_trips() -> None:
    wave = np.arange(1, 16_001, dtype=np.float32)
    early = shift_audio(wave, 3, 30.0, RATE)       # 3 frames = 1600 samples
    assert early.shape == wave.shape and early.dtype == wave.dtype
    assert early[0] == wave[1600] and (early[-1600:] == 0).all()
    back = shift_audio(early, -3, 30.0, RATE)
    assert (back[:1600] == 0).all() and np.array_equal(back[1600:], wave[1600:])
    assert np.array_equal(shift_audio(wave, 0, 30.0, RATE), wave)


def test_speech_envelope_has_one_value_per_frame() -> None:
    wave = np.zeros(RATE, np.float32)              # 1 s at 30 fps: 30 frames
    burst = slice(RATE // 3, 2 * RATE // 3)        # frames 10..19
    wave[burst] = 0.5 * np.sin(np.arange(burst.stop - burst.start) * 2 * np.pi * 1000 / RATE)
    energy = speech_envelope(wave, RATE, 30.0, 40)
    assert energy.shape == (40,)
    assert energy[12:18].min() > 100 * max(energy[:8].max(), 1e-12)
    assert energy[12:18] == pytest.approx(0.125, rel=0.1)  # mean square of a 0.5 sine
    assert (energy[31:] == 0).all()                        # past the end of the audio


def test_sync_sign_convention_on_synthetic_signals() -> None:
    rng = np.random.default_rng(3)
    mouth = np.convolve(rng.random(300), np.ones(5) / 5, "same")
    energy = np.roll(mouth, 4) ** 2                # the audio lags the lips by 4 frames
    est = estimate_sync(mouth, energy)
    assert est.offset_frames == 4 and est.reliable and est.confidence > SYNC_CONF_THRESHOLD
    assert estimate_sync(mouth, np.roll(mouth, -2)).offset_frames == -2
    mouth[::7] = np.nan                            # frames without a face are bridged
    assert estimate_sync(mouth, energy).offset_frames == 4


def test_sync_without_signal_is_not_reliable() -> None:
    flat = estimate_sync(np.full(200, np.nan), np.ones(200))
    assert not flat.reliable and flat.note == "no face to measure the mouth" and math.isnan(flat.confidence)
    silent = estimate_sync(np.sin(np.arange(200) / 3), np.zeros(200))
    assert not silent.reliable and silent.note == "audio is silent: no sync estimate"
    still = estimate_sync(0.2 + 0.001 * np.sin(np.arange(200) / 3), np.random.default_rng(0).random(200))
    assert not still.reliable and still.note == "too little mouth motion for a sync estimate"
    assert json.dumps(flat.to_dict(), allow_nan=False)


def test_scores_round_to_stable_json() -> None:
    scores = QualityScores(1.0, 250.123456789, 240.0, 3.3333333333, 1.0, float("nan"), 0.0123456789, 100.0, 99.5,
                           (60,), -1, 4.123456789, 0.4, None)
    row = scores.to_dict()
    assert row["face_px_median"] == 250.123457 and row["roll_range_deg"] is None and row["scene_cuts"] == [60]
    assert json.dumps(row, allow_nan=False) == json.dumps(scores.to_dict(), allow_nan=False)
