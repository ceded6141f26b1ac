"""Audio stage: wav2vec2 features aligned to the clip's video frames, stored as float16."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from aniportrait.audio import ModelLoadError, Wav2Vec2Features, load_audio, normalize
from aniportrait.schema import ClipState
from aniportrait.storage import write_local_atomic
from pipelines.stages.base import ClipStage
from pipelines.stages.cut import AUDIO_NAME
from pipelines.stages.face import npy_bytes

FEATURES_NAME = "wav2vec.npy"
#: Below this peak amplitude the audio is treated as silence (about -80 dBFS).
SILENCE_PEAK = 1e-4


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
    failed: it keeps its video and landmarks, and ``info["audio_features"]`` says why it
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
        return {"work_dir": str(self.work.root), "model": self.model, "revision": self.revision,
                "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        clip_id = state.record.clip_id
        if AUDIO_NAME not in state.outputs.values():
            state.info["audio_features"] = f"none: {state.info.get('audio_note') or 'no audio'}"
            return
        wave = load_audio(self.work.clip_file(clip_id, AUDIO_NAME))
        peak = float(np.abs(wave).max()) if len(wave) else 0.0
        if peak < SILENCE_PEAK:
            state.info["audio_features"] = f"none: silent audio (peak {peak:.1e})"
            return
        features = self.extractor(normalize(wave), int(state.info["frames"])).astype(np.float16)
        write_local_atomic(self.work.clip_file(clip_id, FEATURES_NAME), npy_bytes(features))
        state.outputs[FEATURES_NAME] = FEATURES_NAME
        state.info["audio_features"] = "wav2vec2"
        state.info["audio_model"] = f"{self.model_info()['model']}@{self.revision}"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
