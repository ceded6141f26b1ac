"""The on-disk format of a release, defined once: what the shards hold and how to read it back.

A release folder holds WebDataset shards (``*.tar``), ``manifest.parquet`` (one row per
clip of the metadata) and ``release.json`` (every shard with its sha256, size and sample
count). A shard sample is one clip: tar members ``<clip_id>.<member>``, one per
:class:`Member` below (``mp4``, ``wav``, ``json``, ``<name>.npy`` ...). This module owns

- the members: name, dtype, shape and meaning of each (:data:`MEMBERS`), and the file in
  a clip's work folder each is packed from (:attr:`Member.work_file`);
- the sample readers: :func:`iter_samples` / :func:`read_shard` (samples of shards),
  :func:`member_bytes`, :func:`read_array` and :func:`read_meta` (one member of a sample,
  with one missing-member rule: :class:`MissingMemberError` when required, ``None`` when not),
  and :func:`array_bytes`, the ``.npy`` encoding :func:`read_array` reads;
- ``release.json`` (:func:`read_release`, :func:`release_bytes`) and ``manifest.parquet``
  (:func:`read_manifest`; its columns are defined in :mod:`aniportrait.manifest`).

Importing it is cheap: numpy, pyarrow and webdataset (which imports torch) are imported by
the functions that need them, so the build driver and the CLI can name members freely.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from aniportrait.storage import OutputDir

RELEASE_NAME = "release.json"
MANIFEST_NAME = "manifest.parquet"
#: Suffix of the members that hold one numpy array (``np.save`` bytes).
ARRAY_SUFFIX = ".npy"


@dataclass(frozen=True)
class Member:
    """One member of a shard sample (tar member ``<clip_id>.<name>``).

    ``dtype`` is the numpy dtype of an array member, else its encoding; ``shape`` that of an
    array member (``T`` the clip's frame count, ``D`` the feature width), ``()`` for others.
    ``work_file`` is the file in the clip's work folder the member is packed from (``None``:
    written by the pack phase itself); ``condition`` says when a sample has the member
    (empty: every sample has it).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    meaning: str
    work_file: str | None
    condition: str = ""

    @property
    def is_array(self) -> bool:
        """Whether the member holds one ``.npy`` array."""
        return self.name.endswith(ARRAY_SUFFIX)

    @property
    def shape_text(self) -> str:
        """The shape as written in docs: ``(T, 478, 3)``, ``(T,)``."""
        return f"({', '.join(map(str, self.shape))}{',' if len(self.shape) == 1 else ''})"


META = Member("json", "UTF-8 JSON", (),
              "clip metadata: source record (video id, time span, crop) and measured facts (`info`)", None)
VIDEO = Member("mp4", "H.264", (), "the face crop, H.264", "clip.mp4")
AUDIO = Member("wav", "PCM s16le, 16 kHz mono", (), "the clip's audio, PCM", "audio.wav",
               "present only for clips whose source has audio")
#: The ``wav`` member's work file once ``--fix-sync`` shifted the audio (the original stays).
SYNCED_AUDIO_FILE = "audio.synced.wav"
POSE_VIDEO = Member("pose.mp4", "H.264 RGB lossless", (),
                    "rendered pose image per frame (the PoseGuider input), H.264", "pose.mp4")
LANDMARKS = Member("lmks.npy", "float32", ("T", 478, 3),
                   "MediaPipe face landmarks, x and y normalised to the frame, NaN rows where no face", "lmks.npy")
MESH = Member("lmks3d.npy", "float32", ("T", 468, 3),
              "canonical face mesh (the 468 mesh vertices in canonical space)", "lmks3d.npy")
TRANS_MAT = Member("trans_mat.npy", "float32", ("T", 4, 4), "canonical-to-camera pose matrix per frame",
                   "trans_mat.npy")
POSE6D = Member("pose6d.npy", "float32", ("T", 6),
                "Euler xyz angles in degrees (pitch, yaw, roll) and translation per frame", "pose6d.npy")
BLENDSHAPES = Member("blendshapes.npy", "float32", ("T", 52), "MediaPipe blendshape scores (index 0 is `_neutral`)",
                     "blendshapes.npy")
HAS_FACE = Member("has_face.npy", "bool", ("T",), "whether a face was found in each frame", "has_face.npy")
WAV2VEC = Member("wav2vec.npy", "float16", ("T", "D"), "wav2vec2 hidden states resampled to the video frame rate",
                 "wav2vec.npy", "present only in builds with --wav2vec2, for clips with audio that is not silent")

#: Every member a sample may hold, in the order the docs list them.
MEMBERS: tuple[Member, ...] = (META, VIDEO, AUDIO, POSE_VIDEO, LANDMARKS, MESH, TRANS_MAT, POSE6D, BLENDSHAPES,
                               HAS_FACE, WAV2VEC)
MEMBERS_BY_NAME: dict[str, Member] = {m.name: m for m in MEMBERS}


class MissingMemberError(ValueError):
    """A sample lacks a required member (the message names the sample, the member and when samples have it)."""


def _value(sample: Mapping[str, Any], member: Member, required: bool) -> Any:
    if member.name in sample:
        return sample[member.name]
    if required:
        when = f" ({member.condition})" if member.condition else ""
        raise MissingMemberError(f"sample {sample.get('__key__')} has no {member.name} member{when}")
    return None


@overload
def member_bytes(sample: Mapping[str, Any], member: Member, *, required: Literal[True] = ...) -> bytes: ...


@overload
def member_bytes(sample: Mapping[str, Any], member: Member, *, required: bool) -> bytes | None: ...


def member_bytes(sample: Mapping[str, Any], member: Member, *, required: bool = True) -> bytes | None:
    """The raw bytes of ``member`` in ``sample``; ``None`` when absent and not ``required``
    (:class:`MissingMemberError` when absent and ``required``)."""
    return _value(sample, member, required)


@overload
def read_array(sample: Mapping[str, Any], member: Member, *, required: Literal[True] = ...) -> np.ndarray: ...


@overload
def read_array(sample: Mapping[str, Any], member: Member, *, required: bool) -> np.ndarray | None: ...


def read_array(sample: Mapping[str, Any], member: Member, *, required: bool = True) -> np.ndarray | None:
    """The array of the ``.npy`` ``member`` of ``sample`` (raw bytes, or an array a webdataset
    decoder made already); ``None`` when absent and not ``required`` (:class:`MissingMemberError`
    when absent and ``required``)."""
    import numpy as np

    if not member.is_array:
        raise ValueError(f"{member.name} is not an array member")
    value = _value(sample, member, required)
    if value is None or isinstance(value, np.ndarray):
        return value
    return np.load(io.BytesIO(value), allow_pickle=False)


def array_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` bytes of ``array`` as a member stores them (``np.save``: header + raw data, deterministic)."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_meta(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The sample's ``json`` member: ``clip_id``, ``record``, ``info`` and ``members``."""
    return json.loads(member_bytes(sample, META))


def read_shard(stream: IO[bytes], name: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard read from ``stream`` (``__url__`` is ``name``), in tar order."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    yield from group_by_keys({**f, "__url__": name} for f in tar_file_iterator(stream))


def iter_samples(out_uri: str, shard_names: list[str]) -> Iterator[dict[str, Any]]:
    """Samples of the named shards of the release at ``out_uri`` (local or remote), streamed one by one."""
    from aniportrait.storage import OutputDir

    out = OutputDir.from_uri(out_uri)
    for name in shard_names:
        with out.fs.open_input_stream(out.path(name)) as stream:
            yield from read_shard(stream, name)


def read_release(out: OutputDir) -> dict[str, Any]:
    """The ``release.json`` of the release in ``out``."""
    return json.loads(out.read_bytes(RELEASE_NAME))


def release_bytes(release: dict[str, Any]) -> bytes:
    """``release.json`` bytes: sorted keys, two-space indent, a final newline (no timestamps)."""
    return (json.dumps(release, sort_keys=True, indent=2) + "\n").encode()


def read_manifest(out: OutputDir, columns: list[str] | None = None) -> pa.Table:
    """The ``manifest.parquet`` of the release in ``out`` (all columns, or ``columns``)."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(out.read_bytes(MANIFEST_NAME)), columns=columns)
