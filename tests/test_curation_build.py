"""Curation inside real builds: scene cuts split or reject clips, filters, sync correction, stats."""

from __future__ import annotations

import io
import json
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from rich.console import Console
from sample_lists import write_sample_lists

from aniportrait.audio import SAMPLE_RATE
from aniportrait.quality import estimate_sync, mouth_opening, speech_envelope
from datasets_spec import sample
from pipelines.build.run import run_build
from pipelines.build.config import BuildConfig
from pipelines.build.curation import CurationSettings
from pipelines.tools.report import manifest_stats

pytestmark = pytest.mark.slow

JOIN_FRAME = 120  # 4 s of one real video, then another, at 30 fps
DELAY_FRAMES = 6


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Path:
    """Real sources: two real videos joined at 4 s, a real clip, and a real clip whose audio is late."""
    folder = tmp_path_factory.mktemp("mirror")
    shot = "trim=duration=4,setpts=PTS-STARTPTS,scale=512:512,fps=30,setsar=1"
    sound = "atrim=duration=4,asetpts=PTS-STARTPTS,aresample=16000,aformat=channel_layouts=mono"
    _ffmpeg("-i", str(media_dir / "talking_lyl_7s.mp4"), "-i", str(media_dir / "head_pose_ref.mp4"),
            "-filter_complex", f"[0:v]{shot}[v0];[1:v]{shot}[v1];[0:a]{sound}[a0];[1:a]{sound}[a1];"
                               "[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]",
            "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-crf", "18", "-c:a", "aac", str(folder / "Joined.mp4"))
    _ffmpeg("-i", str(media_dir / "talking_lyl_7s.mp4"), "-af", f"adelay={DELAY_FRAMES * 1000 // 30}:all=1",
            "-c:v", "copy", "-c:a", "aac", str(folder / "LylLate.mp4"))
    (folder / "Radio10.mp4").symlink_to(sample.default_mirror() / "Radio10.mp4")
    return folder


def _build(out: Path, metadata: Path, mirror: Path, curation: CurationSettings, work: Path | None = None,
           **options: object):
    cfg = BuildConfig(dataset="sample", out=str(out), work_dir=str(work or out / "_work"), metadata=str(metadata),
                      mirror=str(mirror), workers=2, curation=curation, **options)
    return run_build(cfg, Console(file=open(os.devnull, "w")))


def _rows(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def _samples(out: Path, listing: str = "shards") -> dict[str, dict]:
    """Samples of the release's ``shards`` (or ``rejected_shards``), read with webdataset."""
    release = json.loads((out / "release.json").read_text())
    shards = [str(out / entry["name"]) for entry in release[listing]]
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)} if shards else {}


@pytest.fixture(scope="module")
def split_build(local_ray: None, mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split")
    metadata = write_sample_lists(root / "meta", {"Joined": ("https://example.invalid/joined", ["00:00-00:08"])})
    out = root / "out"
    result = _build(out, metadata, mirror, CurationSettings())
    assert result.failed == 0
    return out


def test_a_clip_across_a_scene_cut_becomes_two_clips(split_build: Path) -> None:
    rows = _rows(split_build)
    parent = rows.pop("Joined_0")
    assert parent["status"] == "split" and parent["shard"] is None
    (cut,) = parent["scene_cuts"]
    assert abs(cut - JOIN_FRAME) <= 1
    assert sorted(rows) == ["Joined_0-f00000", f"Joined_0-f{cut:05d}"]
    first, second = (rows[k] for k in sorted(rows))
    assert first["status"] == second["status"] == "ok"
    assert first["parent_clip_id"] == second["parent_clip_id"] == "Joined_0"
    assert first["frames"] == cut and abs(second["frames"] - (parent["frames"] - cut)) <= 1
    assert first["scene_cuts"] == [] and second["scene_cuts"] == []
    samples = _samples(split_build)
    assert sorted(samples) == sorted(rows)
    meta = json.loads(samples[f"Joined_0-f{cut:05d}"]["json"])
    assert meta["record"]["provenance"]["parent_clip_id"] == "Joined_0"
    assert meta["info"]["face_px_median"] == second["face_px_median"] > 100


def test_stats_show_statuses_and_score_distributions(split_build: Path) -> None:
    console = Console(record=True, width=160, file=open(os.devnull, "w"))
    manifest_stats(str(split_build), console)
    text = console.export_text()
    assert "3 clips: 2 ok" in text and "1 split" in text
    assert "face_px_median" in text and "sharpness" in text


@pytest.fixture(scope="module")
def filtered_build(local_ray: None, mirror: Path, split_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other curation settings in the work area of ``split_build``: Joined_0's stages up to
    the quality scores are resumed from there (their settings are the same), the filter runs again."""
    root = tmp_path_factory.mktemp("filtered")
    metadata = write_sample_lists(root / "meta", {
        "Joined": ("https://example.invalid/joined", ["00:00-00:08"]),
        "Radio10": ("https://www.youtube.com/watch?v=ZoRK17RCZHY", ["00:00-00:02"]),
        "LylLate": ("https://example.invalid/late", ["00:00-00:07"]),
    })
    out = root / "out"
    curation = CurationSettings(filter=("duration_s>=3",), scene_cuts="reject", fix_sync=True)
    result = _build(out, metadata, mirror, curation, work=split_build / "_work", keep_rejected=True)
    assert result.failed == 0, "filtered clips are results, not failures"
    return out


def test_rejected_clips_are_rows_with_the_rule_and_their_scores(filtered_build: Path) -> None:
    rows = _rows(filtered_build)
    assert rows["Joined_0"]["status"] == "filtered" and rows["Joined_0"]["error"] == "filtered:scene_cut"
    assert rows["Radio10_0"]["status"] == "filtered" and rows["Radio10_0"]["error"] == "filtered:duration_s>=3"
    assert rows["Radio10_0"]["face_px_median"] > 0 and rows["Radio10_0"]["sync_note"]
    assert rows["LylLate_0"]["status"] == "ok"
    assert sorted(_samples(filtered_build)) == ["LylLate_0"]
    rejected = _samples(filtered_build, "rejected_shards")
    assert sorted(rejected) == ["Joined_0", "Radio10_0"], "--keep-rejected shards the filtered clips apart"
    assert json.loads(rejected["Radio10_0"]["json"])["info"]["face_px_median"] == rows["Radio10_0"]["face_px_median"]
    release = json.loads((filtered_build / "release.json").read_text())
    assert release["counts"]["filtered"] == 2 and release["counts"]["failed"] == 0
    assert all("rejected" in entry["name"] for entry in release["rejected_shards"])


def test_fix_sync_shifts_late_audio_back(filtered_build: Path) -> None:
    row = _rows(filtered_build)["LylLate_0"]
    assert abs(row["sync_offset"] - DELAY_FRAMES) <= 1 and row["audio_shift_frames"] == row["sync_offset"]
    sample_ = _samples(filtered_build)["LylLate_0"]
    with wave.open(io.BytesIO(sample_["wav"])) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768.0
    assert len(pcm) == row["audio_samples"]
    lmks = np.load(io.BytesIO(sample_["lmks.npy"]))
    has_face = np.load(io.BytesIO(sample_["has_face.npy"]))
    mouth = mouth_opening(lmks, has_face, 512, 512)
    again = estimate_sync(mouth, speech_envelope(pcm, SAMPLE_RATE, 30.0, len(mouth)), fps=30.0)
    assert abs(again.offset_frames) <= 1
