"""Audio stage: wav2vec2 features aligned to the clip's video frames, stored as float16."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from aniportrait.audio import ModelLoadError, Wav2Vec2Features, load_audio, normalize
from aniportrait.format import AUDIO, WAV2VEC, array_bytes
from aniportrait.schema import ClipState
from aniportrait.storage import write_local_atomic
from pipelines.build.stages.base import ClipStage, is_clips_fault
#: Below this peak amplitude the audio is treated as silence (about -80 dBFS).
SILENCE_PEAK = 1e-4
#: wav2vec2's CNN needs one receptive field (25 ms at 16 kHz) to produce a feature.
MIN_SAMPLES = 400


def model_revision(model: str) -> str:
    """A content id of a wav2vec2 checkpoint: sha256 of a local folder's files, or the hub commit."""
    folder = Path(model)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return "sha256:" + digest.hexdigest()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load wav2vec2 model {model!r} ({str(exc).splitlines()[0]}); pass --wav2vec2 "
                             "with a local directory holding a saved Wav2Vec2Model or a reachable hub id") from exc
    return f"hub:{getattr(config, '_commit_hash', None) or 'unknown'}"


class AudioFeatures(ClipStage):
    """Encode each clip's 16 kHz audio with wav2vec2 into one feature row per video frame.

    A clip without audio (a video-only dataset or source) or with silent audio is not
    failed: it keeps its video and landmarks, and ``info.audio_features`` says why it
    has no features.
    """

    name = "audio"
    uses_gpu = True

    def __init__(self, work_dir: str, model: str, revision: str, upstream_hash: str = "",
                 device: str | None = None) -> None:
        super().__init__(work_dir, {"revision": revision, "dtype": "float16"}, upstream_hash)
        self.model, self.revision = model, revision
        self.extractor = Wav2Vec2Features(model, device or _default_device())

    def model_info(self) -> dict[str, str]:
        return {"model": self.model if not Path(self.model).is_dir() else Path(self.model).name,
                "revision": self.revision}

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "model": self.model, "revision": self.revision,
                "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        wave = self.load(state)
        if wave is not None:
            self.store(state, self.extractor(wave, int(state.info.frames)))

    def run_batch(self, states: list[ClipState]) -> None:
        """Encode clips of similar length together (one encoder pass per length bucket)."""
        waiting: list[tuple[ClipState, np.ndarray]] = []
        todo = [s for s in states if not self.restore(s)]
        for state in todo:
            self.work.clear_temporaries(state.record.clip_id)
            try:
                wave = self.load(state)
            except Exception as exc:  # recorded per clip
                if not is_clips_fault(exc):
                    raise
                self.record_failure(state, exc)
                continue
            if wave is not None:
                waiting.append((state, wave))
        for group in length_buckets(waiting, key=lambda item: int(item[0].info.frames)):
            try:
                features = self.extractor.batch([w for _, w in group], [int(s.info.frames) for s, _ in group])
                for (state, _), rows in zip(group, features):
                    self.store(state, rows)
            except Exception as exc:  # recorded on each clip of the bucket
                for state, _ in group:
                    self.record_failure(state, exc)
        for state in todo:
            self.write_marker(state)

    def load(self, state: ClipState) -> np.ndarray | None:
        """The clip's normalised audio, or ``None`` (with the reason in ``info``) when it has none."""
        if AUDIO.name not in state.outputs:
            state.info.audio_features = f"none: {state.info.audio_note or 'no audio'}"
            return None
        wave = load_audio(self.work.input_file(state.record.clip_id, state.outputs[AUDIO.name]))
        if len(wave) < MIN_SAMPLES:
            state.info.audio_features = f"none: audio too short ({len(wave)} samples, wav2vec2 needs {MIN_SAMPLES})"
            return None
        peak = float(np.abs(wave).max()) if len(wave) else 0.0
        if peak < SILENCE_PEAK:
            state.info.audio_features = f"none: silent audio (peak {peak:.1e})"
            return None
        return normalize(wave)

    def store(self, state: ClipState, features: np.ndarray) -> None:
        """Write the clip's features as float16 ``wav2vec.npy``."""
        write_local_atomic(self.work.clip_file(state.record.clip_id, WAV2VEC.work_file),
                           array_bytes(features.astype(np.float16)))
        state.outputs[WAV2VEC.name] = WAV2VEC.work_file
        state.info.audio_features = "wav2vec2"
        state.info.audio_model = f"{self.model_info()['model']}@{self.revision}"


def length_buckets(items: list, key, max_ratio: float = 1.25) -> list[list]:
    """Group items sorted by ``key`` so that each group's longest is at most ``max_ratio`` x its shortest."""
    groups: list[list] = []
    for item in sorted(items, key=key):
        if groups and key(item) <= key(groups[-1][0]) * max_ratio:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
