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


def frame_aligned_cnn(model, input_values, num_frames: int):
    """The wav2vec2 CNN features (~50 Hz) of ``input_values`` (B, samples), linearly
    interpolated (``align_corners=True``) to ``num_frames`` rows: (B, num_frames, C).

    ``model`` is a transformers ``Wav2Vec2Model`` (or a subclass); the alignment happens
    BEFORE the transformer encoder (:func:`encode_aligned`), as the official Audio2Lmk does.
    The build's features (:class:`Wav2Vec2Features`) and the encoder inside Audio2Mesh and
    Audio2Pose (``models.wav2vec.AudioEncoder``) both go through here.
    """
    import torch.nn.functional as F

    cnn = model.feature_extractor(input_values)                                  # (B, C, ~50 Hz)
    return F.interpolate(cnn, size=int(num_frames), mode="linear", align_corners=True).transpose(1, 2)


def encode_aligned(model, aligned, attention_mask=None):
    """The transformer encoder's ``last_hidden_state`` (B, T, hidden) of frame-aligned CNN
    features (B, T, C): feature projection, SpecAugment (training mode only, as transformers
    does), encoder."""
    hidden, _ = model.feature_projection(aligned)
    hidden = model._mask_hidden_states(hidden, attention_mask=attention_mask)
    return model.encoder(hidden, attention_mask=attention_mask).last_hidden_state


def load_wav2vec2(model: str):  # -> transformers.Wav2Vec2Model
    """A pretrained ``Wav2Vec2Model`` from a local directory or a hub id (``--wav2vec2``).

    Offline, a hub id that is not cached raises :class:`ModelLoadError` saying how to fix it.
    """
    from transformers import Wav2Vec2Model

    try:
        return Wav2Vec2Model.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load wav2vec2 model {model!r} ({str(exc).splitlines()[0]}); pass "
            "--wav2vec2 with a local directory holding a saved Wav2Vec2Model (config.json + weights) "
            "or a hub id that is reachable or already cached"
        ) from exc


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
        return load_wav2vec2(self.model_name).to(self.device).eval()

    def __call__(self, wave: np.ndarray, num_frames: int) -> np.ndarray:
        """Features (num_frames, hidden) float32 of a normalised 16 kHz mono ``wave``."""
        return self.batch([wave], [num_frames])[0]

    def batch(self, waves: list[np.ndarray], num_frames: list[int]) -> list[np.ndarray]:
        """Features of several utterances with one encoder pass.

        The CNN runs per utterance (its group norm spans the whole utterance, so padding
        would change it); the aligned features are padded to the longest and the encoder
        gets an attention mask. Padded positions are zeros, exactly what the positional
        convolution pads with anyway, so each result equals the one-by-one result.
        """
        import torch
        import torch.nn.functional as F

        if any(n < 1 for n in num_frames):
            raise ValueError("num_frames must be positive")
        with torch.inference_mode():
            aligned = []
            for wave, frames in zip(waves, num_frames):
                values = torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None].to(self.device)
                aligned.append(frame_aligned_cnn(self.model, values, frames)[0])  # (frames, C)
            longest = max(num_frames)
            padded = torch.stack([F.pad(a, (0, 0, 0, longest - len(a))) for a in aligned])
            mask = torch.stack([torch.arange(longest, device=self.device) < n for n in num_frames])
            encoded = encode_aligned(self.model, padded, mask if len(waves) > 1 else None)
            states = encoded.float().cpu().numpy()
        return [states[i, :n] for i, n in enumerate(num_frames)]
