"""Typed records that travel through every stage of the build.

A :class:`ClipRecord` is what a dataset's metadata says about one clip (immutable). A
:class:`ClipState` is that record plus what the stages found out so far (status, error,
paths in the work area, and the measured facts of :class:`ClipInfo`). All round-trip
through plain dicts (``to_dict``/``from_dict``) so Ray can move them between processes
as JSON; a clip's ``info`` dict is also the ``info`` of its shard sample's ``json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aniportrait.ids import is_safe_id

#: Clip status values written to the manifest.
STATUS_OK = "ok"
STATUS_FAILED = "failed"
#: Rejected by a curation rule; the clip keeps its files (``--keep-rejected`` shards them).
STATUS_FILTERED = "filtered"
#: Crosses a scene cut and was replaced by sub-clips (rows of their own); no files.
STATUS_SPLIT = "split"
#: Every status a manifest row can have.
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_FILTERED, STATUS_SPLIT)
#: The ``failed_stage`` of a metadata entry that could not be read (before any build stage).
METADATA_STAGE = "metadata"


@dataclass(frozen=True, slots=True)
class CropSpec:
    """A crop window as the dataset's metadata states it.

    ``kind`` is ``"pixels"`` (box in pixels of a reference frame of ``ref_width`` x
    ``ref_height``; either may be ``None`` when the metadata gives only one side, then
    the other side scales by the same factor) or ``"normalized"`` (box in [0, 1] of the
    frame). ``expand`` grows a normalised box on every side before use and ``square``
    shrinks it to a centred square (CelebV-HQ's own rules). ``pad`` (pixel boxes) keeps a
    box that reaches beyond the frame whole and fills the outside with black, as the official
    AniPortrait ``crop_face`` does; without it the box is clamped to the frame.
    """

    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    ref_width: float | None = None
    ref_height: float | None = None
    expand: float = 0.0
    square: bool = False
    pad: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("pixels", "normalized"):
            raise ValueError(f"unknown crop kind {self.kind!r}")
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"empty crop box {self}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not self.pad:
            del data["pad"]  # records of boxes clamped to the frame keep their former bytes
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropSpec:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """One clip as described by a dataset's official metadata.

    Time spans are seconds in the source video (``start_s`` inclusive, ``end_s``
    exclusive). Frame spans (VFHQ) are source frame indices, ``start_frame`` inclusive,
    ``end_frame`` exclusive, at ``source_fps``; the clip stage turns them into times.
    A record with no span at all stands for a metadata entry that could not be read: it
    is a failed manifest row and is never processed.
    """

    dataset: str
    clip_id: str
    source_id: str
    source_url: str | None
    mirror_names: tuple[str, ...]
    start_s: float | None = None
    end_s: float | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    source_fps: float | None = None
    crop: CropSpec | None = None
    expect_audio: bool = True
    max_height: int | None = None
    split: str = "train"
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("clip_id", "source_id"):
            value = getattr(self, name)
            if not is_safe_id(value):
                raise ValueError(f"{name} {value!r} is not filesystem-safe; build it with safe_id()")
        has_time = self.start_s is not None and self.end_s is not None
        has_frames = self.start_frame is not None and self.end_frame is not None
        if has_time and has_frames:
            raise ValueError(f"clip {self.clip_id}: give a time span or a frame span, not both")
        if has_time and not self.end_s > self.start_s:  # type: ignore[operator]
            raise ValueError(f"clip {self.clip_id}: empty time span {self.start_s}..{self.end_s}")
        if has_frames:
            if not self.end_frame > self.start_frame:  # type: ignore[operator]
                raise ValueError(f"clip {self.clip_id}: empty frame span {self.start_frame}..{self.end_frame}")
            if not self.source_fps or self.source_fps <= 0:
                raise ValueError(f"clip {self.clip_id}: a frame span needs source_fps")

    @property
    def has_span(self) -> bool:
        """False only for the record of a metadata entry that could not be read."""
        return (self.start_s is not None and self.end_s is not None) or (
            self.start_frame is not None and self.end_frame is not None)

    def time_span(self) -> tuple[float, float]:
        """The span in source seconds (frame spans converted with ``source_fps``)."""
        if self.start_s is not None and self.end_s is not None:
            return self.start_s, self.end_s
        if not self.has_span:
            raise ValueError(f"clip {self.clip_id}: its metadata entry has no readable span")
        fps = float(self.source_fps)  # type: ignore[arg-type]
        return self.start_frame / fps, self.end_frame / fps  # type: ignore[operator]

    def part(self, first_frame: int, end_frame: int, fps: float) -> ClipRecord:
        """The sub-clip of frames ``first_frame..end_frame`` of this clip cut at ``fps``.

        Its id is stable: the parent's id plus the first frame (``<id>-f00060``); its
        provenance names the parent.
        """
        start_s, _ = self.time_span()
        return dataclasses.replace(
            self, clip_id=f"{self.clip_id}-f{first_frame:05d}",
            start_s=start_s + first_frame / fps, end_s=start_s + end_frame / fps,
            start_frame=None, end_frame=None,
            provenance={**self.provenance, "parent_clip_id": self.clip_id, "parent_frames": [first_frame, end_frame]},
        )

    @property
    def parent_clip_id(self) -> str | None:
        """The clip this one was split from, if it is a sub-clip."""
        return self.provenance.get("parent_clip_id")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mirror_names"] = list(self.mirror_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipRecord:
        data = dict(data)
        data["mirror_names"] = tuple(data.get("mirror_names", ()))
        if data.get("crop") is not None:
            data["crop"] = CropSpec.from_dict(data["crop"])
        return cls(**data)


@dataclass(slots=True, init=False, repr=False)
class ClipInfo:
    """The small measured facts of one clip, each set by the stage that measures it.

    A fact no stage recorded yet is *absent*: it reads as ``None`` and :meth:`to_dict`
    leaves it out, while a fact recorded as ``None`` (``audio_note`` of a complete track,
    ``sync_conf`` without audio) is written as ``null``. So the dict of a clip holds
    exactly the keys its stages wrote. ``scores`` holds the values of the scores added to
    the registry with a compute function (:mod:`aniportrait.scores`), by name; it is
    written as ``"scores"`` only when not empty. The built-in scores are facts of their own.
    """

    # clip stage (``pipelines/build/stages/cut.py``)
    frames: int | None
    fps: float | None
    width: int | None
    height: int | None
    duration_s: float | None
    has_audio: bool | None
    audio_samples: int | None
    #: Why the clip has no or padded audio (``None``: complete).
    audio_note: str | None
    #: The span cut, in source seconds (its end clipped to the source's duration).
    span_s: list[float] | None
    crop_box: list[int] | None
    source_width: int | None
    source_height: int | None
    source_fps: float | None
    source_codec: str | None
    # download stage: yt-dlp's reason code of a failed download
    download_reason: str | None
    # face stage: detection, and the scores that need pixels (one decode)
    face_frames: int | None
    face_rate: float | None
    scene_cuts: list[int] | None
    sharpness: float | None
    brightness: float | None
    faces_max: int | None
    second_face_rate: float | None
    track_jumps: int | None
    # quality stage (``aniportrait.quality.QualityScores``)
    face_px_median: float | None
    face_px_min: float | None
    yaw_range_deg: float | None
    pitch_range_deg: float | None
    roll_range_deg: float | None
    jitter: float | None
    sync_offset: int | None
    sync_conf: float | None
    sync_score0: float | None
    sync_note: str | None
    # filter stage: the shots ``(first, end)`` a clip split at scene cuts was replaced by
    parts: list[list[int]] | None
    # sync stage: the shift applied to the audio, in frames
    audio_shift_frames: int | None
    # audio stage
    audio_features: str | None
    audio_model: str | None
    #: Values of the registered scores that have a compute function, by score name.
    scores: dict[str, float | int | None]
    #: Names of the facts recorded so far (what :meth:`to_dict` writes).
    recorded: set[str]

    #: Every fact name (the fields but ``scores`` and ``recorded``).
    FACTS: ClassVar[tuple[str, ...]]

    def __init__(self, **facts: Any) -> None:
        object.__setattr__(self, "recorded", set())
        object.__setattr__(self, "scores", {})
        for name in self.FACTS:
            object.__setattr__(self, name, None)
        self.update(**facts)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "scores":
            object.__setattr__(self, name, value)
            return
        if name not in self.FACTS:
            raise AttributeError(f"a clip has no fact {name!r}; known facts: {', '.join(self.FACTS)}")
        object.__setattr__(self, name, value)
        self.recorded.add(name)

    def __repr__(self) -> str:
        return f"ClipInfo({', '.join(f'{k}={v!r}' for k, v in sorted(self.to_dict().items()))})"

    def __reduce__(self) -> tuple[Any, ...]:
        return ClipInfo.from_dict, (self.to_dict(),)

    def update(self, **facts: Any) -> None:
        """Record several facts at once."""
        for name, value in facts.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The recorded facts (and ``scores`` when not empty) as a JSON-able dict."""
        data = {name: getattr(self, name) for name in self.FACTS if name in self.recorded}
        if self.scores:
            data["scores"] = dict(self.scores)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipInfo:
        data = dict(data)
        info = cls(**{k: v for k, v in data.items() if k != "scores"})
        info.scores = dict(data.get("scores", {}))
        return info


ClipInfo.FACTS = tuple(f.name for f in dataclasses.fields(ClipInfo) if f.name not in ("scores", "recorded"))


@dataclass(slots=True)
class ClipState:
    """A clip on its way through the stages: the record plus what was found so far.

    ``outputs`` maps a member name (``mp4``, ``wav``, later ``lmks.npy`` ...) to a file
    in the work area; ``info`` holds the measured facts (:class:`ClipInfo`).
    A failed or removed clip keeps the first error, the stage that raised it and a short
    ``reason`` code (one of :data:`aniportrait.reasons.REASONS`); later stages pass it
    through unchanged.
    """

    record: ClipRecord
    status: str = STATUS_OK
    error: str | None = None
    failed_stage: str | None = None
    reason: str | None = None
    source_path: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    info: ClipInfo = field(default_factory=ClipInfo)
    cached_stages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def fail(self, stage: str, error: str, reason: str) -> None:
        """Mark the clip failed by ``stage`` with a readable ``error`` and its ``reason`` code."""
        self.status = STATUS_FAILED
        self.failed_stage = stage
        self.error = error
        self.reason = reason

    def reject(self, stage: str, rule: str, reason: str) -> None:
        """Mark the clip filtered out by ``stage`` under ``rule`` (error ``filtered:<rule>``)."""
        self.status = STATUS_FILTERED
        self.failed_stage = stage
        self.error = f"filtered:{rule}"
        self.reason = reason

    def split(self, stage: str, note: str) -> None:
        """Mark the clip replaced by sub-clips (listed by the stage in ``info.parts``)."""
        self.status = STATUS_SPLIT
        self.failed_stage = stage
        self.error = note
        self.reason = "scene_cut"

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        data["record"] = self.record.to_dict()
        data["info"] = self.info.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipState:
        data = dict(data)
        data["record"] = ClipRecord.from_dict(data["record"])
        data["info"] = ClipInfo.from_dict(data["info"])
        return cls(**data)

    def to_row(self) -> dict[str, str]:
        """A one-column row for Ray Data (JSON keeps Arrow schemas uniform across blocks)."""
        return {"state": json.dumps(self.to_dict(), sort_keys=True)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClipState:
        return cls.from_dict(json.loads(row["state"]))
