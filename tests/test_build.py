"""End-to-end builds on real Ray (local), real ffmpeg, real yt-dlp and real webdataset readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import webdataset as wds
from loopback import serve_directory
from rich.console import Console
from sample_lists import SAMPLE_SIZE
from sample_lists import write_sample_lists as _write_lists

from aniportrait.face import DEFAULT_MODEL_SHA256
from aniportrait.media.cut import CutSettings
from aniportrait.media.probe import count_video_frames, probe
from datasets_spec import sample
from pipelines.build.run import run_build
from pipelines.build.config import BuildConfig

pytestmark = pytest.mark.slow

EXIT_PARTIAL = 3
SAMPLE_IDS = ["LylTalking_0", "LylTalking_1", "Radio10_0"]
MEMBERS = {"json", "mp4", "wav", "pose.mp4", "lmks.npy", "lmks3d.npy", "trans_mat.npy", "pose6d.npy",
           "blendshapes.npy", "has_face.npy"}


def _build(out: Path, *, dataset: str = "sample", metadata: Path | None = None, mirror: Path | None = None,
           workers: int = 2, wav2vec2: Path | None = None):
    """A build in this process, at the frame size of the shared ``sample_build``."""
    cfg = BuildConfig(dataset=dataset, out=str(out), work_dir=str(out / "_work"),
                      metadata=str(metadata) if metadata else None,
                      mirror=str(mirror or sample.default_mirror()), workers=workers,
                      wav2vec2=str(wav2vec2) if wav2vec2 else None, cut=CutSettings(size=SAMPLE_SIZE))
    return run_build(cfg, Console(file=open(os.devnull, "w")))


def _outputs(out: Path) -> dict[str, bytes]:
    """Every released file (shards, manifest, release file) by name."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_sample_build_reads_back_with_webdataset(sample_build: tuple[Path, object], tmp_path: Path) -> None:
    """The shared build of the sample (``conftest.sample_build``)."""
    out, result = sample_build
    assert result.failed == 0
    shards = sorted(out.glob("*.tar"))
    assert [s.name for s in shards] == ["sample-train-000000.tar"]
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    assert [s["__key__"] for s in samples] == SAMPLE_IDS
    for item in samples:
        assert set(item) - {"__key__", "__url__", "__local_path__"} == MEMBERS
        meta = json.loads(item["json"])
        frames = meta["info"]["frames"]
        for member in ("mp4", "pose.mp4"):
            video = tmp_path / f"{item['__key__']}.{member}"
            video.write_bytes(item[member])
            assert count_video_frames(video) == frames
            info = probe(video)
            assert (info.width, info.height) == (SAMPLE_SIZE, SAMPLE_SIZE)
        lmks, has_face = np.load(io.BytesIO(item["lmks.npy"])), np.load(io.BytesIO(item["has_face.npy"]))
        assert lmks.shape == (frames, 478, 3) and has_face.all() and meta["info"]["face_rate"] == 1.0
        assert np.load(io.BytesIO(item["pose6d.npy"])).shape == (frames, 6)
        pcm_bytes = len(item["wav"]) - 44  # canonical 44-byte header of a 16-bit mono wav
        assert pcm_bytes // 2 == meta["info"]["audio_samples"] == round(meta["info"]["frames"] * 16000 / 30)
    frames = {s["__key__"]: json.loads(s["json"])["info"]["frames"] for s in samples}
    assert frames == {"LylTalking_0": 90, "LylTalking_1": 120, "Radio10_0": 60}


def test_sample_build_reads_back_with_ray(local_ray: None, sample_build: tuple[Path, object]) -> None:
    out, _ = sample_build
    rows = ray.data.read_webdataset(str(out / "sample-train-000000.tar")).take_all()
    assert sorted(r["__key__"] for r in rows) == SAMPLE_IDS
    assert all(len(r["mp4"]) > 1000 for r in rows)


def test_manifest_and_release_describe_the_shards(sample_build: tuple[Path, object]) -> None:
    out, _ = sample_build
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["clip_id"] for r in manifest] == SAMPLE_IDS
    assert {r["status"] for r in manifest} == {"ok"}
    assert {r["shard"] for r in manifest} == {"sample-train-000000.tar"}
    assert manifest[2]["source_url"].startswith("https://www.youtube.com/watch?v=ZoRK17RCZHY")
    release = json.loads((out / "release.json").read_text())
    for shard in release["shards"]:
        data = (out / shard["name"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest() and shard["size"] == len(data)
    assert release["manifest"]["sha256"] == hashlib.sha256((out / "manifest.parquet").read_bytes()).hexdigest()
    assert release["counts"] == {"clips": 3, "ok": 3, "failed": 0, "filtered": 0, "split": 0, "frames": 270}
    assert release["tools"]["ffmpeg"].startswith("ffmpeg version")
    assert "out" not in release["config"] and "workers" not in release["config"]
    assert release["models"]["face"]["sha256"] == DEFAULT_MODEL_SHA256


def test_inspect_and_stats_read_the_build(sample_build: tuple[Path, object]) -> None:
    from typer.testing import CliRunner

    from cli import app

    out, _ = sample_build
    runner = CliRunner()
    shown = runner.invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "3 clips in 1 shards" in shown.output and "LylTalking_0" in shown.output
    stats = runner.invoke(app, ["stats", str(out)])
    assert stats.exit_code == 0, stats.output
    assert "3 clips: 3 ok" in stats.output and "270 frames" in stats.output
    missing = runner.invoke(app, ["stats", str(out / "nope")])
    assert missing.exit_code == 2


def test_two_builds_are_byte_identical_whatever_the_worker_count(
        sample_build: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = sample_build
    again = tmp_path / "again"
    _build(again, workers=1)
    assert _outputs(again) == _outputs(out)


def test_failures_are_recorded_and_nothing_escapes(local_ray: None, tmp_path: Path, media_dir: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(sample.default_mirror() / "Radio10.mp4", mirror / "Good.mp4")
    (mirror / "Broken.mp4").write_bytes(b"this is not a video")
    www = tmp_path / "www"
    www.mkdir()
    shutil.copyfile(media_dir / "talking_hdtf_radio10_0.mp4", www / "remote.mp4")
    with serve_directory(www) as base:
        metadata = _write_lists(tmp_path / "meta", {
            "Good": ("https://www.youtube.com/watch?v=ZoRK17RCZHY", ["00:00-00:01", "00:05-00:09"]),
            "Broken": ("https://www.youtube.com/watch?v=ZoRK17RCZHA", ["00:00-00:01"]),
            "Remote": (f"{base}/remote.mp4", ["00:00-00:01"]),
            "Gone": (f"{base}/missing.mp4", ["00:00-00:01"]),
            "../escape": (f"{base}/missing2.mp4", ["00:00-00:01"]),
            "$(touch${IFS}PWNED);rm": (f"{base}/remote.mp4", ["00:00-00:01"]),
        }, crops={"Good_0": "0 512 0 512", "Good_1": "0 512 0 512", "Remote_0": "900 100 900 100"})
        before = sorted(p.name for p in tmp_path.iterdir())
        out = tmp_path / "out"
        result = _build(out, metadata=metadata, mirror=mirror)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["out"])
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
    rows = {r["clip_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert len(rows) == 7 and result.failed == 5
    assert rows["Good_0"]["status"] == "ok" and rows["Good_0"]["frames"] == 30
    assert "starts after the end of the 2.069 s source" in rows["Good_1"]["error"]
    assert rows["Good_1"]["reason"] == "span_out_of_range" and rows["Broken_0"]["reason"] == "unreadable_source"
    assert rows["Broken_0"]["failed_stage"] == "clip" and "Broken.mp4" in rows["Broken_0"]["error"]
    assert "(http_error)" in rows["Gone_0"]["error"] and rows["Gone_0"]["failed_stage"] == "download"
    assert "outside the 512x512 video" in rows["Remote_0"]["error"]
    escaped = [cid for cid in rows if cid.startswith("escape_")]
    assert len(escaped) == 1 and "(http_error)" in rows[escaped[0]]["error"]
    pwned = [cid for cid in rows if cid.startswith("touch_IFS_PWNED")]
    assert len(pwned) == 1 and rows[pwned[0]]["status"] == "ok", "a hostile name is just a name"
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
    assert [k for s in wds.WebDataset(str(out / "sample-train-000000.tar"), shardshuffle=False)
            for k in [s["__key__"]]] == sorted(["Good_0", pwned[0]])


def test_a_source_is_downloaded_once_for_all_its_clips(local_ray: None, tmp_path: Path, media_dir: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    shutil.copyfile(media_dir / "talking_hdtf_radio10_0.mp4", www / "remote.mp4")
    requested: list[str] = []
    with serve_directory(www, requested) as base:
        metadata = _write_lists(tmp_path / "meta", {
            "Remote": (f"{base}/remote.mp4", ["00:00-00:01", "00:01-00:02", "00:00-00:02"])})
        result = _build(tmp_path / "out", metadata=metadata, mirror=tmp_path / "empty-mirror")
    assert result.failed == 0 and len(result.states) == 3
    downloads = requested.count("/remote.mp4")
    assert 1 <= downloads <= 2, f"one yt-dlp download (probe + fetch), got {requested}"
    assert sorted(p.name for p in (tmp_path / "out" / "_work" / "sources").iterdir()) == ["Remote.lock", "Remote.mp4"]


def test_audio_features_align_with_frames(local_ray: None, tmp_path: Path, tiny_wav2vec2: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(sample.default_mirror() / "Radio10.mp4", mirror / "Radio10.mp4")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(mirror / "Radio10.mp4"), "-an", "-c", "copy",
                    str(mirror / "Silent.mp4")], check=True)
    metadata = _write_lists(tmp_path / "meta", {
        "Radio10": ("https://www.youtube.com/watch?v=ZoRK17RCZHY", ["00:00-00:02"]),
        "Silent": ("https://www.youtube.com/watch?v=ZoRK17RCZHA", ["00:00-00:01"]),
    })
    out = tmp_path / "out"
    result = _build(out, metadata=metadata, mirror=mirror, wav2vec2=tiny_wav2vec2)
    assert result.failed == 0
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / "sample-train-000000.tar"), shardshuffle=False)}
    features = np.load(io.BytesIO(samples["Radio10_0"]["wav2vec.npy"]))
    assert features.dtype == np.float16 and features.shape == (60, 32)
    assert "wav2vec.npy" not in samples["Silent_0"] and "wav" not in samples["Silent_0"]
    rows = {r["clip_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows["Radio10_0"]["audio_features"] == "wav2vec2"
    assert rows["Radio10_0"]["audio_model"].startswith(f"{tiny_wav2vec2.name}@sha256:")
    assert rows["Silent_0"]["audio_features"] == "none: source has no audio stream"
    release = json.loads((out / "release.json").read_text())
    assert release["models"]["audio"]["revision"].startswith("sha256:")


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_cli_exit_codes(tmp_path: Path) -> None:
    usage = subprocess.run([sys.executable, "-m", "cli", "build", "--dataset", "nope", "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert usage.returncode == 2 and "unknown dataset 'nope'" in usage.stderr
    metadata = _write_lists(tmp_path / "meta", {"Radio10": ("https://www.youtube.com/watch?v=ZoRK17RCZHY", ["00:00-00:01", "00:03-00:04"])})
    partial = _cli("build", "--dataset", "sample", "--metadata", str(metadata), "--out", str(tmp_path / "out"),
                   "--mirror", str(sample.default_mirror()), cwd=tmp_path)
    _, err = partial.communicate(timeout=300)
    assert partial.returncode == EXIT_PARTIAL, err.decode()
    assert b"1 of 2 clips failed" in err
