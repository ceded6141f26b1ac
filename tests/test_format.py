"""``aniportrait.format`` is the one definition of the shard format: no member name is written
out anywhere else, and its readers read a real build back exactly."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest

from aniportrait.format import (
    HAS_FACE,
    LANDMARKS,
    MANIFEST_NAME,
    MEMBERS,
    MEMBERS_BY_NAME,
    META,
    RELEASE_NAME,
    VIDEO,
    WAV2VEC,
    MissingMemberError,
    array_bytes,
    iter_samples,
    member_bytes,
    read_array,
    read_manifest,
    read_meta,
    read_release,
    read_shard,
    release_bytes,
)
from aniportrait.storage import OutputDir

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("aniportrait", "pipelines", "models", "datasets_spec")
#: Strings equal to a member name that mean something else there.
NOT_MEMBERS = {
    ("aniportrait/media/cut.py", "mp4"): "ffmpeg muxer (-f mp4)",
    ("aniportrait/media/cut.py", "wav"): "ffmpeg muxer (-f wav)",
    ("aniportrait/media/encode.py", "mp4"): "ffmpeg container of encode_rgb_frames",
    ("aniportrait/media/probe.py", "json"): "ffprobe's output format",
}


def _strings(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string constant in ``path`` that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and ast.get_docstring(node, clean=False) is not None}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_member_names_are_written_out_only_in_the_format_module() -> None:
    names = {m.name for m in MEMBERS} | {m.work_file for m in MEMBERS if m.work_file}
    files = [p for package in SCANNED for p in sorted((REPO / package).rglob("*.py"))] + [REPO / "cli.py"]
    found: dict[tuple[str, str], list[int]] = {}
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        if rel == "aniportrait/format.py":
            continue
        for line, value in _strings(path):
            if value in names:
                found.setdefault((rel, value), []).append(line)
    allowed = set(NOT_MEMBERS)
    stray = [f"{rel}:{line}: {value!r}" for (rel, value), lines in sorted(found.items()) if (rel, value) not in allowed
             for line in lines]
    assert not stray, "member names outside aniportrait/format.py (use its Member constants):\n" + "\n".join(stray)
    stale = sorted(allowed - set(found))
    assert not stale, f"no longer written out, remove from tests/test_format.py: {stale}"


def test_member_table() -> None:
    assert len(MEMBERS_BY_NAME) == len(MEMBERS) and MEMBERS_BY_NAME[LANDMARKS.name] is LANDMARKS
    assert [m.name for m in MEMBERS if m.is_array] == [
        "lmks.npy", "lmks3d.npy", "trans_mat.npy", "pose6d.npy", "blendshapes.npy", "has_face.npy", "wav2vec.npy"]
    for member in MEMBERS:
        assert member.meaning and member.dtype and "\n" not in member.meaning
        assert (member.shape[:1] == ("T",)) == member.is_array
        if member.is_array:
            np.dtype(member.dtype)  # a real numpy dtype
            assert member.work_file == member.name
    assert META.work_file is None and VIDEO.work_file == "clip.mp4"
    assert LANDMARKS.shape_text == "(T, 478, 3)" and HAS_FACE.shape_text == "(T,)"


@pytest.fixture(scope="module")
def built(sample_build: tuple[Path, object]) -> Path:
    """The real local-Ray build of the embedded sample (``conftest.sample_build``, read only)."""
    return sample_build[0]


@pytest.fixture(scope="module")
def samples(built: Path) -> list[dict]:
    release = read_release(OutputDir.from_uri(str(built)))
    return list(iter_samples(str(built), [s["name"] for s in release["shards"]]))


def test_release_and_manifest_read_back(built: Path) -> None:
    out = OutputDir.from_uri(str(built))
    release = read_release(out)
    assert release == json.loads((built / RELEASE_NAME).read_text())
    assert release_bytes(release) == (built / RELEASE_NAME).read_bytes()  # the writer's encoding, byte for byte
    manifest = read_manifest(out)
    assert manifest.num_rows == release["manifest"]["rows"] and release["manifest"]["name"] == MANIFEST_NAME
    assert read_manifest(out, ["clip_id", "shard"]).column_names == ["clip_id", "shard"]


def test_samples_read_back_as_the_table_says(built: Path, samples: list[dict]) -> None:
    rows = read_manifest(OutputDir.from_uri(str(built)), ["clip_id", "status"]).to_pylist()
    assert sorted(s["__key__"] for s in samples) == sorted(r["clip_id"] for r in rows if r["status"] == "ok")
    for sample in samples:
        key = sample["__key__"]
        present = {name for name in sample if not name.startswith("__")}
        assert present <= set(MEMBERS_BY_NAME) and WAV2VEC.name not in present  # built without --wav2vec2
        meta = read_meta(sample)
        assert meta["clip_id"] == key and set(meta["members"]) | {META.name} == present
        frames = meta["info"]["frames"]
        for name in sorted(present):
            member = MEMBERS_BY_NAME[name]
            data = member_bytes(sample, member)
            if member.work_file is not None:  # packed byte for byte from the clip's work folder
                assert (built / "_work" / "clips" / key / member.work_file).read_bytes() == data, name
            if not member.is_array:
                continue
            array = read_array(sample, member)
            assert array.dtype == np.dtype(member.dtype), name
            assert array.shape == tuple(frames if d == "T" else d for d in member.shape), name
            assert array_bytes(array) == data, name  # the build writes what array_bytes writes
            assert read_array({**sample, name: array}, member) is array  # already decoded: as it is


def test_read_shard_is_what_iter_samples_streams(built: Path, samples: list[dict]) -> None:
    name = samples[0]["__url__"]
    with open(built / name, "rb") as stream:
        keys = [s["__key__"] for s in read_shard(stream, name)]
    assert keys == [s["__key__"] for s in samples if s["__url__"] == name]


def test_a_missing_member_raises_when_required_and_is_none_when_not(samples: list[dict]) -> None:
    sample = samples[0]
    key = sample["__key__"]
    assert read_array(sample, WAV2VEC, required=False) is None
    assert member_bytes(sample, WAV2VEC, required=False) is None
    with pytest.raises(MissingMemberError) as caught:
        read_array(sample, WAV2VEC)
    assert str(caught.value) == (f"sample {key} has no wav2vec.npy member "
                                 "(present only in builds with --wav2vec2, for clips with audio that is not silent)")
    without = {k: v for k, v in sample.items() if k != LANDMARKS.name}
    with pytest.raises(MissingMemberError, match=rf"^sample {key} has no lmks\.npy member$"):
        read_array(without, LANDMARKS)
    assert read_array(without, LANDMARKS, required=False) is None
    with pytest.raises(MissingMemberError, match=rf"^sample {key} has no json member$"):
        read_meta({k: v for k, v in sample.items() if k != META.name})
    with pytest.raises(ValueError, match="not an array member"):
        read_array(sample, VIDEO)


def test_the_card_describes_members_from_the_table(samples: list[dict]) -> None:
    from pipelines.tools.card import members_section

    table = "\n".join(members_section(samples[0]))
    for name in samples[0]:
        if not name.startswith("__"):
            assert f"| `{name}` |" in table and MEMBERS_BY_NAME[name].meaning in table


def test_array_bytes_is_deterministic_npy() -> None:
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    data = array_bytes(array)
    assert data == array_bytes(array.copy()) and np.array_equal(np.load(io.BytesIO(data)), array)
