"""The per-clip cache (work area) on object storage: a real S3 server (moto) on loopback.

``build --out s3://...`` with no ``--work-dir`` keeps its cache at ``<out>/_work``; the
stages work in a node-local scratch copy under ``TMPDIR``. Each build runs through the
CLI in a subprocess with its own ``TMPDIR``, so a second run starts from an empty
scratch, as on a fresh node: all it knows comes from the bucket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sample_lists import SAMPLE_SIZE, SAMPLE_SIZE_ARGS
from test_object_storage import (  # noqa: F401 - s3 is a fixture
    BUCKET,
    REPO,
    SAMPLE_IDS,
    MotoServer,
    _assert_same_release,
    _local_files,
    s3,
)

from aniportrait.media.cut import CutSettings
from datasets_spec import folder, sample
from pipelines.build.run import _resume, clip_stages, load_records
from pipelines.build.config import BuildConfig
from pipelines.build.workarea import scratch_dir

pytestmark = pytest.mark.slow

PREFIX = "cached"
#: The stages every clip of the sample passes, in order (no audio features, no --fix-sync).
STAGES = ["clip", "face", "render", "quality", "filter"]
#: A clip whose last two markers the resume test deletes: they run again, the rest is restored.
RERUN_CLIP = "LylTalking_1"


def _run(s3: MotoServer, *args: str, cwd: Path, scratch: Path) -> str:
    """The CLI in a subprocess with ``scratch`` as its ``TMPDIR`` (Ray keeps its own folder in /tmp)."""
    scratch.mkdir(parents=True)
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(REPO), "COLUMNS": "250",
           "TMPDIR": str(scratch), "RAY_TMPDIR": tempfile.gettempdir()}
    proc = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=900)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 0, err
    return err


def _markers(s3: MotoServer, prefix: str = PREFIX, suffix: str = ".done.json") -> dict[str, object]:
    """Marker key -> LastModified of every stage marker (``suffix``) in the remote cache."""
    listing = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/_work/")
    return {o["Key"]: o["LastModified"] for o in listing.get("Contents", []) if o["Key"].endswith(suffix)}


def _release_files(s3: MotoServer, prefix: str = PREFIX) -> dict[str, bytes]:
    """The release's objects (directly under the prefix, not in ``_work/``) by name."""
    client = s3.client()
    listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/", Delimiter="/")
    return {o["Key"].rsplit("/", 1)[1]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", []) if not o["Key"].endswith("/")}


def _clip_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def reference(sample_build: tuple[Path, object]) -> Path:
    """The local build of the sample (``conftest.sample_build``: a local work dir, read only)."""
    return sample_build[0]


@pytest.fixture(scope="module")
def remote_build(s3: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``--out s3://aniportrait/cached`` and no ``--work-dir``: (its scratch TMPDIR, its stderr)."""
    root = tmp_path_factory.mktemp("remote")
    err = _run(s3, "build", "--dataset", "sample", "--out", f"s3://{BUCKET}/{PREFIX}", "--workers", "2",
               *SAMPLE_SIZE_ARGS, cwd=root, scratch=root / "tmp")
    return root / "tmp", err


def test_cache_in_the_bucket_gives_the_local_build_bytes(s3: MotoServer, reference: Path,
                                                         remote_build: tuple[Path, str]) -> None:
    scratch, err = remote_build
    assert "3 clips, 0 already done, 3 to process" in err
    _assert_same_release(_release_files(s3), _local_files(reference))
    markers = _markers(s3)
    assert sorted(markers) == sorted(f"{PREFIX}/_work/clips/{c}/{s}.done.json" for c in SAMPLE_IDS for s in STAGES)
    local_work = reference / "_work" / "clips"
    for clip_id in SAMPLE_IDS:  # every file the local build made, with the same bytes
        uploaded = s3.files(f"{PREFIX}/_work/clips/{clip_id}")
        made = {p.name: p.read_bytes() for p in (local_work / clip_id).iterdir()}
        assert {n: b for n, b in uploaded.items() if not n.endswith(".done.json")} == \
               {n: b for n, b in made.items() if not n.endswith(".done.json")}
    cache = scratch / "aniportrait-work"
    assert cache.is_dir() and _clip_files(cache) == [], "the scratch copy keeps only clips in flight"
    assert s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads") is None, "no upload left open"


def test_driver_resume_reads_only_markers(s3: MotoServer, remote_build: tuple[Path, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a fresh scratch for this process
    cfg = BuildConfig(dataset="sample", out=s3.uri(PREFIX), work_dir=s3.uri(f"{PREFIX}/_work"),
                      mirror=str(sample.default_mirror()), cut=CutSettings(size=SAMPLE_SIZE)).resolved()
    stages = clip_stages(cfg)
    records, unreadable = load_records(cfg)
    assert unreadable == []
    done, pending = _resume(stages[-1], records, ["download"] + STAGES)
    assert [s.record.clip_id for s in done] == SAMPLE_IDS and pending == []
    assert all(s.outputs["mp4"] == "clip.mp4" for s in done)
    assert _clip_files(scratch_dir(cfg.work_dir)) == [], "no clip file was downloaded"


def test_a_fresh_node_resumes_from_the_bucket(s3: MotoServer, reference: Path, remote_build: tuple[Path, str],
                                              tmp_path: Path) -> None:
    """Run again on an empty scratch with two markers of one clip gone: only they run again (their
    input files come from the bucket), every other stage is restored, and the bytes stay the same."""
    before = _markers(s3)
    rerun = {f"{PREFIX}/_work/clips/{RERUN_CLIP}/{stage}.done.json" for stage in ("quality", "filter")}
    for key in rerun:
        s3.client().delete_object(Bucket=BUCKET, Key=key)
    err = _run(s3, "build", "--dataset", "sample", "--out", f"s3://{BUCKET}/{PREFIX}", "--workers", "2",
               *SAMPLE_SIZE_ARGS, cwd=tmp_path, scratch=tmp_path / "fresh")
    assert "3 clips, 2 already done, 1 to process" in err
    after = _markers(s3)
    assert sorted(after) == sorted(before)
    assert {k: v for k, v in after.items() if k not in rerun} == {k: v for k, v in before.items() if k not in rerun}, \
        "restored stages left their markers alone"
    assert all(after[k] > before[k] for k in rerun)
    _assert_same_release(_release_files(s3), _local_files(reference))
    assert _clip_files(tmp_path / "fresh" / "aniportrait-work") == []


def test_a_folder_build_keeps_its_scans_and_clips_in_the_bucket(s3: MotoServer, media_dir: Path,
                                                                tmp_path: Path) -> None:
    """``--dataset folder`` with its cache in the bucket: the same release as with a local work
    dir, the video's scan kept as a marker there, and a run on an empty scratch scans nothing
    and processes nothing again (the videos themselves are read where they are)."""
    videos = tmp_path / "my videos"
    videos.mkdir()
    shutil.copy(media_dir / "talking_lyl_7s.mp4", videos / "me talking.mp4")
    build = ("build", "--dataset", "folder", "--metadata", str(videos), "--wav2vec2", "none", "--workers", "2",
             *SAMPLE_SIZE_ARGS)
    _run(s3, *build, "--out", str(tmp_path / "local"), cwd=tmp_path, scratch=tmp_path / "tmp-local")
    err = _run(s3, *build, "--out", f"s3://{BUCKET}/mine", cwd=tmp_path, scratch=tmp_path / "tmp-first")
    assert "1 clips, 0 already done, 1 to process" in err
    _assert_same_release(_release_files(s3, "mine"), _local_files(tmp_path / "local"))
    scans = _markers(s3, "mine", ".segment.json")
    assert list(scans) == [f"mine/_work/sources/{folder.source_id('me talking.mp4')}.segment.json"]
    err = _run(s3, *build, "--out", f"s3://{BUCKET}/mine", cwd=tmp_path, scratch=tmp_path / "tmp-fresh")
    assert "1 clips, 1 already done, 0 to process" in err
    assert _markers(s3, "mine", ".segment.json") == scans, "the scan came from the bucket"
    _assert_same_release(_release_files(s3, "mine"), _local_files(tmp_path / "local"))
