"""Curation stages: quality scores, filter rules / scene-cut policy, audio sync correction.

They run after the face and render stages and before the wav2vec2 features: the scores
need the landmarks and the clip's audio track (not its features), and a clip that is
filtered out or split never costs a GPU encode; a corrected audio track is what the
features are computed from.
"""

from __future__ import annotations

import math
import wave

import numpy as np

from aniportrait.audio import SAMPLE_RATE, load_audio
from aniportrait.format import AUDIO, BLENDSHAPES, HAS_FACE, LANDMARKS, MESH, POSE6D, SYNCED_AUDIO_FILE, VIDEO
from aniportrait.filters import first_broken, parse_rules, scene_parts
from aniportrait.quality import SYNC_CONF_THRESHOLD, clip_quality, shift_audio
from aniportrait.schema import ClipState
from aniportrait.scores import ScoreInput, ScoreRegistry, compute_scores
from aniportrait.storage import local_atomic_path
from pipelines.build.curation import CurationSettings
from pipelines.build.stages.base import ClipStage

#: Sync offsets searched, in frames each way (0.5 s at 30 fps).
SYNC_MAX_OFFSET = 15


class ScoreQuality(ClipStage):
    """Every score of the registry from the face arrays and audio.

    The built-in ones: face size, head-pose range, jitter and sync (:func:`clip_quality`);
    scene cuts, sharpness and brightness need pixels, so the face stage gathers them from
    its own decode (one decode per clip) and this stage adds them. Then each added score's
    compute function (:func:`aniportrait.scores.compute_scores`), its value in
    ``info.scores``. ``scores`` is the registry snapshot the build made; it travels with
    the stage to its Ray worker (see :mod:`aniportrait.scores`). The added scores and
    their versions are part of the settings: adding one scores cached clips again.
    """

    name = "quality"
    version = 1

    def __init__(self, work_dir: str, scores: ScoreRegistry, upstream_hash: str = "") -> None:
        settings: dict[str, object] = {"sync_max_offset": SYNC_MAX_OFFSET}
        if scores.computed:
            settings["scores"] = {score.name: score.version for score in scores.computed}
        super().__init__(work_dir, settings, upstream_hash)
        self.scores = scores

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "scores": self.scores, "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        clip_id = state.record.clip_id
        members = (LANDMARKS, MESH, POSE6D, HAS_FACE) + ((BLENDSHAPES,) if self.scores.computed else ())
        arrays = {member: np.load(self.work.input_file(clip_id, member.work_file)) for member in members}
        audio = load_audio(self.work.input_file(clip_id, state.outputs[AUDIO.name])) if AUDIO.name in state.outputs else None
        info = state.info
        frame_scores = {"scene_cuts": info.scene_cuts, "sharpness": info.sharpness, "brightness": info.brightness,
                        "width": info.width, "height": info.height}
        scores = clip_quality(self.work.input_file(clip_id, VIDEO.work_file), arrays[LANDMARKS], arrays[MESH],
                              arrays[POSE6D], arrays[HAS_FACE], audio, SAMPLE_RATE, float(info.fps),
                              max_sync_offset=SYNC_MAX_OFFSET, frame_scores=frame_scores)
        info.update(**scores.to_dict())
        if self.scores.computed:
            clip = ScoreInput(arrays[LANDMARKS], arrays[MESH], arrays[POSE6D], arrays[BLENDSHAPES],
                              arrays[HAS_FACE], audio, SAMPLE_RATE, info)
            info.scores.update(compute_scores(self.scores.computed, clip))


class FilterClips(ClipStage):
    """Apply the scene-cut policy and the filter rules to the scores; never drops a row.

    A clip crossing a scene cut is split into sub-clips (``split``: the build then runs
    each shot of at least ``min_part_s`` as a clip of its own), rejected (``reject``) or
    kept (``keep``); a sub-clip that still crosses a cut is rejected. A clip with a second
    face in more than ``max_second_face_rate`` of the sampled frames is marked ``filtered``
    (``filtered:multiple_faces``), so is a clip breaking a rule (``filtered:<rule>``); both
    keep their files. The rules are read against ``scores``, the build's registry snapshot
    (so a rule may name a score registered in the driver only).
    """

    name = "filter"

    def __init__(self, work_dir: str, curation: CurationSettings, scores: ScoreRegistry,
                 upstream_hash: str = "") -> None:
        settings = {"filter": list(curation.filter), "scene_cuts": curation.scene_cuts,
                    "min_part_s": curation.min_part_s, "max_second_face_rate": curation.max_second_face_rate}
        super().__init__(work_dir, settings, upstream_hash)
        self.curation = curation
        self.scores = scores
        self.rules = parse_rules(curation.filter, scores)

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "curation": self.curation, "scores": self.scores,
                "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        cuts = state.info.scene_cuts or []
        if cuts and self.curation.scene_cuts != "keep":
            self._handle_cuts(state, cuts)
            return
        second_faces = state.info.second_face_rate
        if second_faces is not None and second_faces > self.curation.max_second_face_rate:
            state.reject(self.name, "multiple_faces", "multiple_faces")
            return
        broken = first_broken(self.rules, state.info, self.scores)
        if broken is not None:
            state.reject(self.name, broken.text, "filter_rule")

    def _handle_cuts(self, state: ClipState, cuts: list[int]) -> None:
        fps, frames = float(state.info.fps), int(state.info.frames)
        parts = scene_parts(frames, cuts, math.ceil(self.curation.min_part_s * fps))
        if self.curation.scene_cuts == "reject" or state.record.parent_clip_id or not parts:
            state.reject(self.name, "scene_cut", "scene_cut")
            return
        state.info.parts = [list(part) for part in parts]
        state.split(self.name, f"split at scene cut frame(s) {', '.join(map(str, cuts))} "
                               f"into {len(parts)} sub-clip(s)")


class FixSync(ClipStage):
    """Shift the audio by the measured lip/audio offset (``--fix-sync``) and record the shift.

    Only a reliable estimate (no ``sync_note``, confidence at least
    ``SYNC_CONF_THRESHOLD``) is applied; the corrected track is a new file
    (``audio.synced.wav``), so the clip stage's cache stays as it was.
    """

    name = "sync"

    def __init__(self, work_dir: str, upstream_hash: str = "") -> None:
        super().__init__(work_dir, {"shift": "zero-pad"}, upstream_hash)

    def constructor_kwargs(self) -> dict[str, object]:
        return {"work_dir": self.work.uri, "upstream_hash": self.upstream_hash}

    def process(self, state: ClipState) -> None:
        offset, confidence = state.info.sync_offset, state.info.sync_conf
        usable = (AUDIO.name in state.outputs and offset and state.info.sync_note is None
                  and confidence is not None and confidence >= SYNC_CONF_THRESHOLD)
        state.info.audio_shift_frames = int(offset) if usable else 0
        if not usable:
            return
        clip_id = state.record.clip_id
        samples = load_audio(self.work.input_file(clip_id, state.outputs[AUDIO.name]))
        shifted = shift_audio(samples, int(offset), float(state.info.fps), SAMPLE_RATE)
        pcm = np.clip(np.round(shifted * 32768.0), -32768, 32767).astype("<i2")  # exact for 16-bit input
        with local_atomic_path(self.work.clip_file(clip_id, SYNCED_AUDIO_FILE)) as tmp:
            with wave.open(str(tmp), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(SAMPLE_RATE)
                out.writeframes(pcm.tobytes())
        state.outputs[AUDIO.name] = SYNCED_AUDIO_FILE
