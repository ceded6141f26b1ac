"""The clip cut on real media with real ffmpeg: frames, size, fps, audio, crop, accuracy."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from aniportrait.crop import CropError, PixelBox, resolve_crop
from aniportrait.media.cut import AUDIO_RATE, CutSettings, cut_clip, plan_cut
from aniportrait.media.probe import MediaError, probe
from aniportrait.schema import CropSpec


def _cut(source: Path, tmp_path: Path, span: tuple[float, float], crop: CropSpec | None,
         settings: CutSettings, name: str = "out") -> tuple[Path, Path | None, int]:
    info = probe(source)
    box = resolve_crop(crop, info.width, info.height)
    plan = plan_cut(*span, box, settings, source_duration_s=info.duration_s, with_audio=info.has_audio)
    video, audio = tmp_path / f"{name}.mp4", (tmp_path / f"{name}.wav" if info.has_audio else None)
    frames = cut_clip(source, video, audio, plan, settings)
    return video, audio, frames


def _wav_samples(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path)) as w:
        return w.getnframes(), w.getframerate(), w.getnchannels()


@pytest.mark.parametrize(
    ("name", "span", "crop", "fps", "expected_frames"),
    [
        ("talking_lyl_7s.mp4", (1.0, 4.0), CropSpec("pixels", 0, 1, 514, 515, ref_height=516), 30.0, 90),
        ("talking_lyl_7s.mp4", (0.5, 2.5), None, 25.0, 50),
        ("raw_seated_1080x1920_hevc.mp4", (2.0, 5.5), CropSpec("pixels", 300, 400, 800, 900), 30.0, 105),
        ("talking_hdtf_radio10_0.mp4", (0.0, 2.0), None, 30.0, 60),
    ],
)
def test_cut_frames_size_fps_audio(media_dir: Path, tmp_path: Path, name: str, span: tuple[float, float],
                                   crop: CropSpec | None, fps: float, expected_frames: int) -> None:
    settings = CutSettings(size=256, fps=fps)
    video, audio, frames = _cut(media_dir / name, tmp_path, span, crop, settings)
    out = probe(video)
    assert frames == expected_frames
    assert (out.width, out.height) == (256, 256)
    assert out.fps == pytest.approx(fps)
    assert not out.has_audio, "the mp4 is video-only; audio goes to the wav"
    samples, rate, channels = _wav_samples(audio)
    assert (rate, channels) == (AUDIO_RATE, 1)
    assert samples == round(expected_frames * AUDIO_RATE / fps)


def test_span_past_the_end_fails_unless_within_one_frame(media_dir: Path, tmp_path: Path) -> None:
    source = media_dir / "talking_hdtf_radio10_0.mp4"  # 2.0687 s
    _, audio, frames = _cut(source, tmp_path, (1.0, 2.09), None, CutSettings(size=128))
    assert frames == 32  # within one output frame past the end: floor((2.0687 - 1.0) * 30)
    assert _wav_samples(audio)[0] == round(32 * AUDIO_RATE / 30)
    with pytest.raises(MediaError, match=r"span 1\.000-9\.000 s ends 6\.931 s past the end of the 2\.069 s source") as info:
        _cut(source, tmp_path, (1.0, 9.0), None, CutSettings(size=128), name="long")
    assert info.value.reason == "span_out_of_range"
    with pytest.raises(MediaError, match="starts after the end of the 2.069 s source") as info:
        _cut(source, tmp_path, (5.0, 9.0), None, CutSettings(size=128), name="late")
    assert info.value.reason == "span_out_of_range"


def test_same_input_same_bytes(media_dir: Path, tmp_path: Path) -> None:
    source = media_dir / "talking_lyl_7s.mp4"
    first = _cut(source, tmp_path, (2.0, 3.0), None, CutSettings(size=128), name="a")
    second = _cut(source, tmp_path, (2.0, 3.0), None, CutSettings(size=128), name="b")
    assert first[0].read_bytes() == second[0].read_bytes()
    assert first[1].read_bytes() == second[1].read_bytes()


def _gray_ramp_video(path: Path, frames: int, fps: int, size: int = 64) -> None:
    """A lossless video whose frame i is uniformly gray at level 2*i: a frame counter."""
    data = np.repeat(np.arange(frames, dtype=np.uint8)[:, None, None] * 2, size * size, axis=1)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{size}x{size}",
         "-r", str(fps), "-i", "-", "-c:v", "ffv1", str(path)],
        input=data.tobytes(), check=True,
    )


def _gray_levels(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 32 * 32)
    return frames.mean(axis=1)


def test_cut_is_frame_accurate(tmp_path: Path) -> None:
    """Frames 37..66 of a 30 fps source come out as exactly those frames."""
    source = tmp_path / "ramp.mkv"
    _gray_ramp_video(source, frames=120, fps=30)
    settings = CutSettings(size=32, fps=30, crf=0)
    info = probe(source)
    plan = plan_cut(37 / 30, 67 / 30, PixelBox(0, 0, 64, 64), settings, source_duration_s=info.duration_s,
                    with_audio=False, seek_back_s=0.5 / 30)
    video = tmp_path / "cut.mp4"
    assert cut_clip(source, video, None, plan, settings) == 30
    levels = _gray_levels(video)
    np.testing.assert_allclose(levels, np.arange(37, 67) * 2, atol=1.5)


def test_resolve_crop_rules() -> None:
    # HDTF: box given at 720p, video downloaded at 1080p -> scaled by 1.5
    hdtf = CropSpec("pixels", 483, 0, 873, 390, ref_height=720)
    assert resolve_crop(hdtf, 1920, 1080) == PixelBox(724, 0, 586, 585)
    assert resolve_crop(hdtf, 1280, 720) == PixelBox(483, 0, 390, 390)
    # CelebV-HQ: expand 0.02, round, centred square of side 2*(min(h,w)//2)
    celebv = CropSpec("normalized", 0.1964, 0.0, 0.6922, 0.8815, expand=0.02, square=True)
    box = resolve_crop(celebv, 1280, 720)
    assert box.w == box.h == 2 * (min(649 - 0, 912 - 226) // 2)
    # No crop in the metadata: the whole frame
    assert resolve_crop(None, 640, 480) == PixelBox(0, 0, 640, 480)
    with pytest.raises(CropError, match="outside the 640x480 video"):
        resolve_crop(CropSpec("pixels", 700, 500, 900, 700, ref_width=640, ref_height=480), 640, 480)


def test_a_box_beyond_the_frame_is_padded_black(media_dir: Path, tmp_path: Path) -> None:
    """``pad`` keeps the whole box (the official ``crop_face``): the part left of the frame is
    black and the picture sits where the box puts it; margins are rounded up to even pixels."""
    import cv2

    spec = CropSpec("pixels", -127, 0, 385, 512, pad=True)  # 512 px square, 127 px of it left of the frame
    box = resolve_crop(spec, 512, 512)
    assert box == PixelBox(-127, 0, 512, 512, border=(128, 0, 0, 0))
    assert "pad" not in CropSpec("pixels", 0, 0, 10, 10).to_dict()  # unpadded records keep their bytes
    assert CropSpec.from_dict(spec.to_dict()) == spec
    source = media_dir / "talking_hdtf_radio10_0.mp4"
    video, _, _ = _cut(source, tmp_path, (0.0, 0.5), spec, CutSettings(size=256))
    out = _first_rgb_frame(video, 256)
    frame = _first_rgb_frame(source, 512)
    expected = np.pad(frame, ((0, 0), (127, 0), (0, 0)))[:, :512]  # what the official copyMakeBorder + slice give
    expected = cv2.resize(expected, (256, 256), interpolation=cv2.INTER_AREA)
    assert out[:, :62].max() <= 24, "the 127 px left of the frame are black (63.5 px at 256)"
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6


def _first_rgb_frame(video: Path, size: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", "1", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(size, size, 3)


@pytest.mark.parametrize("spec", [CropSpec("pixels", -127, 40, 257, 424, pad=True),  # beyond the left and bottom
                                  CropSpec("pixels", 300, -60, 560, 200, pad=True)])  # beyond the top and right
def test_a_padded_box_on_an_odd_sized_420_frame(media_dir: Path, tmp_path: Path, spec: CropSpec) -> None:
    """A 4:2:0 frame of odd size is padded to an even one (ffmpeg would round an odd padded
    size down, below the picture, and fail the clip); the part beyond the frame is black."""
    source = tmp_path / "odd_420.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media_dir / "talking_hdtf_radio10_0.mp4"), "-t", "0.5",
                    "-vf", "scale=511:383", "-pix_fmt", "yuv420p", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                    "-an", str(source)], check=True)
    box = resolve_crop(spec, 511, 383)
    left, top, right, bottom = box.border
    assert (511 + left + right) % 2 == 0 and (383 + top + bottom) % 2 == 0
    video, _, frames = _cut(source, tmp_path, (0.0, 0.5), spec, CutSettings(size=128))
    assert frames == 15 and probe(video).width == 128
    out = _first_rgb_frame(video, 128)
    outside = out[:, :40] if spec.x0 < 0 else out[:28]  # 127 of 384 px left of the frame (42 of 128), 60 of 260 above
    assert outside.max() <= 24
