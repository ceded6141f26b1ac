"""Logic that several places share (issue 16): the frames-to-video encoder, the gap filler
and the CLIP preprocessing, each checked directly on behalf of all its callers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from aniportrait.media.encode import encode_rgb_frames, encode_rgb_lossless
from aniportrait.media.probe import MediaError, count_video_frames, probe
from aniportrait.pose import fill_gaps
from pipelines.inference.outputs import write_video
from pipelines.tools.preview import encode_preview

WIDTH, HEIGHT, FRAMES = 96, 64, 10


def _frames() -> np.ndarray:
    """Smooth moving gradients (T,H,W,3) uint8: lossy H.264 keeps them close."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([np.stack([(x * 2 + 8 * t) % 256, (y * 3 + 4 * t) % 256, np.full_like(x, 40 + 10 * t)], -1)
                     for t in range(FRAMES)]).astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)


# ---------------------------------------------------------------------------- encoder


def test_the_three_encoders_give_decodable_videos_of_the_frames_sent(tmp_path: Path, media_dir: Path) -> None:
    frames = _frames()
    lossless, preview, inferred = tmp_path / "pose.mp4", tmp_path / "overlay.mp4", tmp_path / "video.mp4"
    assert encode_rgb_lossless(iter(frames), WIDTH, HEIGHT, 25, lossless) == FRAMES
    assert np.array_equal(_decode(lossless), frames)  # render stage: lossless RGB
    assert encode_preview(iter(frames), WIDTH, HEIGHT, 25, media_dir / "speech_lyl.wav", preview) == FRAMES
    write_video(frames, 25.0, inferred, audio=str(media_dir / "speech_lyl.wav"), audio_seconds=FRAMES / 25)
    for path in (preview, inferred):  # H.264 yuv420p with AAC
        decoded = _decode(path)
        assert decoded.shape == frames.shape and probe(path).has_audio
        assert np.abs(decoded.astype(int) - frames).mean() < 4
    assert count_video_frames(inferred) == FRAMES


def test_the_encoder_checks_frames_and_reports_ffmpeg(tmp_path: Path) -> None:
    frames = list(_frames()[:3])
    frames[1] = frames[1][:, :-1]
    with pytest.raises(MediaError, match=r"frame 1 is \(64, 95, 3\) uint8, expected \(64, 96, 3\) uint8"):
        encode_rgb_lossless(iter(frames), WIDTH, HEIGHT, 25, tmp_path / "bad.mp4")
    with pytest.raises(MediaError, match=r"ffmpeg failed to encode nowhere\.mp4: ") as failed:
        encode_rgb_frames(iter(_frames()), WIDTH, HEIGHT, 25, tmp_path / "missing" / "nowhere.mp4", ["-c:v", "png"])
    assert str(tmp_path) not in str(failed.value)  # paths shortened to file names, as manifests need
    with pytest.raises(MediaError, match="ffmpeg failed to write x.mp4"):
        encode_rgb_frames(iter(_frames()), WIDTH, HEIGHT, 25, tmp_path / "x.mp4", ["-c:v", "no-such-codec"],
                          what="write x.mp4")


# ---------------------------------------------------------------------------- gap filler


def _sync_filler(values: np.ndarray) -> np.ndarray:
    """The quality sync's former own filler, kept here as the reference."""
    ok = np.isfinite(values)
    if ok.all():
        return values
    index = np.arange(len(values))
    return np.interp(index, index[ok], values[ok])


@pytest.mark.parametrize("gaps", [[], [0, 1, 2], [27, 28, 29], [5, 6, 11], [0, 4, 5, 29], list(range(1, 29))])
def test_fill_gaps_equals_the_sync_filler_bit_for_bit(gaps: list[int]) -> None:
    values = np.random.default_rng(len(gaps)).normal(size=30)
    values[gaps] = np.nan
    filled = fill_gaps(values, np.isfinite(values))
    assert filled.dtype == np.float64 and filled.tobytes() == _sync_filler(values).tobytes()
    first, last = np.flatnonzero(np.isfinite(values))[[0, -1]]
    assert (filled[:first] == values[first]).all() and (filled[last:] == values[last]).all()  # ends held
    table = np.stack([values, 2 * values], axis=1)  # 2-D: each column as its own series
    assert fill_gaps(table, np.isfinite(values))[:, 1].tobytes() == _sync_filler(2 * values).tobytes()


def test_fill_gaps_without_a_valid_row_raises() -> None:
    with pytest.raises(ValueError, match="no valid frame"):
        fill_gaps(np.full(5, np.nan), np.zeros(5, bool))


# ---------------------------------------------------------------------------- CLIP preprocessing


def test_clip_pixels_are_clip_numbers_and_serve_inference(media_dir: Path) -> None:
    from PIL import Image
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from pipelines.inference.lmk2video import Lmk2Video, clip_pixels

    portrait = np.array(Image.open(media_dir / "portrait_solo.png").convert("RGB"))
    images = np.stack([portrait, portrait[::-1].copy()])
    pixels = clip_pixels(images, 224)
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == torch.float32
    resized = np.array(Image.fromarray(portrait).resize((224, 224), Image.BICUBIC)) / 255.0
    expected = (resized - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    assert torch.equal(pixels[1], clip_pixels(images[1:], 224)[0])  # a batch row = the image alone

    generator = Lmk2Video.random_tiny(motion=False)
    encoder = generator.models.image_encoder
    with torch.no_grad():
        ours = generator._clip_embedding(portrait)
        by_hand = encoder(clip_pixels(portrait[None], encoder.config.image_size)).image_embeds[:, None]
    assert torch.equal(ours, by_hand)
