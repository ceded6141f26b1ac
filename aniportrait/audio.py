"""Audio for Audio2Lmk: 16 kHz mono loading, per-utterance normalisation, wav2vec2 features.

The features follow the official Audio2Lmk exactly: the wav2vec2 CNN features (~50 Hz)
are linearly interpolated (``align_corners=True``) to ``ceil(n / 16000 * fps)`` frames
BEFORE the transformer encoder, and the encoder's ``last_hidden_state`` is kept, so
there is one feature row per video frame.
"""

from __future__ import annotations

import math
import subprocess
from functools import cached_property
from pathlib import Path

import numpy as np

from aniportrait.media.probe import MediaError

SAMPLE_RATE = 16_000
DEFAULT_WAV2VEC2 = "facebook/wav2vec2-base-960h"


class ModelLoadError(RuntimeError):
    """The wav2vec2 checkpoint could not be loaded (the message names the option to set)."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any audio (or video with audio) to mono float32 at ``sample_rate`` with ffmpeg."""
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
            "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    done = subprocess.run(args, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise MediaError(f"cannot read audio from {Path(path).name}: {message[0]}")
    return np.frombuffer(done.stdout, np.float32).copy()


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance (as ``Wav2Vec2FeatureExtractor`` does)."""
    wave = np.asarray(wave, np.float32)
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


def frame_count(num_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames covered by ``num_samples`` of audio: ``ceil(n / sr * fps)``."""
    return math.ceil(num_samples / sample_rate * fps)


class Wav2Vec2Features:
    """wav2vec2 features aligned to video frames; the model loads lazily on first use.

    ``model`` is a local directory or a hub id (``--wav2vec2``). Offline, a hub id that
    is not cached fails with a :class:`ModelLoadError` that says how to fix it.
    """

    def __init__(self, model: str = DEFAULT_WAV2VEC2, device: str = "cpu") -> None:
        self.model_name = model
        self.device = device

    @cached_property
    def model(self):  # -> transformers.Wav2Vec2Model
        from transformers import Wav2Vec2Model

        try:
            model = Wav2Vec2Model.from_pretrained(self.model_name)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load wav2vec2 model {self.model_name!r} ({str(exc).splitlines()[0]}); pass "
                "--wav2vec2 with a local directory holding a saved Wav2Vec2Model (config.json + weights) "
                "or a hub id that is reachable or already cached"
            ) from exc
        return model.to(self.device).eval()

    def __call__(self, wave: np.ndarray, num_frames: int) -> np.ndarray:
        """Features (num_frames, hidden) float32 of a normalised 16 kHz mono ``wave``."""
        import torch
        import torch.nn.functional as F

        if num_frames < 1:
            raise ValueError("num_frames must be positive")
        with torch.inference_mode():
            values = torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None].to(self.device)
            cnn = self.model.feature_extractor(values)                     # (1, C, ~50 Hz)
            cnn = F.interpolate(cnn, size=num_frames, mode="linear", align_corners=True)
            hidden, _ = self.model.feature_projection(cnn.transpose(1, 2))  # (1, T, hidden)
            encoded = self.model.encoder(hidden).last_hidden_state
        return encoded[0].float().cpu().numpy()
