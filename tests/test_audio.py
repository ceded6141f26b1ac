"""wav2vec2 features through the real loading path with a tiny random model saved here."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Model

from aniportrait.audio import ModelLoadError, Wav2Vec2Features, frame_count, load_audio, normalize


def _write_wav(path: Path, pcm: bytes) -> None:
    """A 16 kHz mono 16-bit wav, as the clip stage writes it."""
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(pcm)


def test_load_audio_resamples_to_16k_mono(media_dir: Path) -> None:
    wave = load_audio(media_dir / "speech_lyl.wav")  # 7.74 s, 44.1 kHz stereo
    assert wave.dtype == np.float32
    assert abs(len(wave) / 16000 - 7.74) < 0.01
    assert np.abs(wave).max() > 0.05, "real speech, not silence"
    normed = normalize(wave)
    assert abs(normed.mean()) < 1e-4 and abs(normed.std() - 1) < 1e-3


@pytest.mark.parametrize("fps", [25, 30])
def test_features_have_one_row_per_video_frame(tiny_wav2vec2: Path, media_dir: Path, fps: int) -> None:
    wave = normalize(load_audio(media_dir / "speech_lyl.wav"))
    frames = frame_count(len(wave), fps)
    assert frames == int(np.ceil(len(wave) / 16000 * fps))
    features = Wav2Vec2Features(str(tiny_wav2vec2))(wave, frames)
    assert features.shape == (frames, 32) and np.isfinite(features).all()


def test_interpolation_happens_before_the_encoder(tiny_wav2vec2: Path, media_dir: Path) -> None:
    """Independent computation: interpolate the CNN features, then run the stock encoder."""
    wave = normalize(load_audio(media_dir / "talking_hdtf_radio10_0.mp4"))
    frames = 62
    ours = Wav2Vec2Features(str(tiny_wav2vec2))(wave, frames)
    model = Wav2Vec2Model.from_pretrained(tiny_wav2vec2).eval()
    with torch.no_grad():
        cnn = model.feature_extractor(torch.from_numpy(wave)[None])
        aligned = F.interpolate(cnn, size=frames, mode="linear", align_corners=True).transpose(1, 2)
        hidden = model.feature_projection(aligned)[0]
        expected = model.encoder(hidden).last_hidden_state[0].numpy()
        native = model(torch.from_numpy(wave)[None]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert native.shape[0] != frames, "without the alignment the encoder runs at ~50 Hz"


def test_missing_model_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="--wav2vec2"):
        Wav2Vec2Features(str(tmp_path / "no-such-model")).model


def test_a_padded_batch_equals_one_by_one(tiny_wav2vec2: Path, media_dir: Path) -> None:
    wave = normalize(load_audio(media_dir / "speech_lyl.wav"))
    waves = [wave[:16000], wave[16000:64000], wave[:40000]]
    frames = [frame_count(len(w), 30) for w in waves]
    extractor = Wav2Vec2Features(str(tiny_wav2vec2))
    batched = extractor.batch(waves, frames)
    for single, together in zip([extractor(w, n) for w, n in zip(waves, frames)], batched):
        np.testing.assert_allclose(together, single, atol=1e-4)


def test_silent_and_missing_audio_are_recorded_not_failed(tiny_wav2vec2: Path, tmp_path: Path) -> None:
    from aniportrait.schema import ClipInfo, ClipRecord, ClipState
    from pipelines.build.stages.audio import AudioFeatures

    stage = AudioFeatures(str(tmp_path), str(tiny_wav2vec2), "sha256:test")
    record = ClipRecord(dataset="t", clip_id="quiet", source_id="s", source_url=None, mirror_names=(),
                        start_s=0.0, end_s=1.0)
    _write_wav(stage.work.clip_file("quiet", "audio.wav"), bytes(2 * 16000))
    silent = ClipState(record, outputs={"wav": "audio.wav"}, info=ClipInfo(frames=30))
    stage.run(silent)
    assert silent.ok and silent.info.audio_features == "none: silent audio (peak 0.0e+00)"
    assert "wav2vec.npy" not in silent.outputs
    short_record = ClipRecord(dataset="t", clip_id="blip", source_id="s", source_url=None, mirror_names=(),
                              start_s=0.0, end_s=0.01)
    _write_wav(stage.work.clip_file("blip", "audio.wav"), np.full(160, 8000, "<i2").tobytes())
    short = ClipState(short_record, outputs={"wav": "audio.wav"}, info=ClipInfo(frames=1))
    stage.run(short)
    assert short.ok and short.info.audio_features == "none: audio too short (160 samples, wav2vec2 needs 400)"
    video_only = ClipState(ClipRecord(dataset="t", clip_id="mute", source_id="s", source_url=None, mirror_names=(),
                                      start_s=0.0, end_s=1.0, expect_audio=False),
                           info=ClipInfo(frames=30, audio_note="dataset is video-only"))
    stage.run(video_only)
    assert video_only.ok and video_only.info.audio_features == "none: dataset is video-only"


def test_batched_stage_equals_one_by_one_and_buckets_by_length(tiny_wav2vec2: Path, tmp_path: Path,
                                                               media_dir: Path) -> None:
    from aniportrait.schema import ClipInfo, ClipRecord, ClipState
    from pipelines.build.stages.audio import AudioFeatures, length_buckets

    assert [len(g) for g in length_buckets([30, 31, 90, 100, 37, 200], key=lambda n: n)] == [3, 2, 1]
    speech = load_audio(media_dir / "speech_lyl.wav")
    states = {}
    for folder in ("one", "batch"):
        stage = AudioFeatures(str(tmp_path / folder), str(tiny_wav2vec2), "sha256:test")
        clips = []
        for frames in (60, 66, 72):  # one length bucket: encoded as a single padded batch
            clip_id, samples = f"c{frames}", frames * 16000 // 30
            _write_wav(stage.work.clip_file(clip_id, "audio.wav"), (speech[:samples] * 32767).astype("<i2").tobytes())
            record = ClipRecord(dataset="t", clip_id=clip_id, source_id="s", source_url=None, mirror_names=(),
                                start_s=0.0, end_s=frames / 30)
            clips.append(ClipState(record, outputs={"wav": "audio.wav"}, info=ClipInfo(frames=frames)))
        if folder == "one":
            for state in clips:
                stage.run(state)
        else:
            stage.run_batch(clips)
        states[folder] = clips
    for single, batched in zip(states["one"], states["batch"]):
        assert batched.ok and batched.info.audio_features == "wav2vec2"
        a = np.load(tmp_path / "one" / "clips" / single.record.clip_id / "wav2vec.npy").astype(np.float32)
        b = np.load(tmp_path / "batch" / "clips" / batched.record.clip_id / "wav2vec.npy").astype(np.float32)
        assert a.shape == b.shape == (single.info.frames, 32)
        np.testing.assert_allclose(a, b, atol=2e-2)  # float16 storage
