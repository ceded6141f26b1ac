"""``build --dataset folder``: your own videos to shards (real media, real MediaPipe and ffmpeg, Ray)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.console import Console

import bad_media
import folder_media
from aniportrait.media.cut import CutSettings
from aniportrait.segment import SegmentSettings
from datasets_spec import folder
from pipelines.build.config import BuildConfig
from pipelines.build.run import BuildResult, run_build


@pytest.fixture(scope="module")
def videos(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as a user has it: phone videos in a subfolder (one stored turned, with a
    rotation matrix), a clip with a name that needs a safe id, a copy that was cut short,
    and a file that is no video."""
    root = tmp_path_factory.mktemp("my_videos")
    (root / "phone").mkdir()
    shutil.copy(media_dir / "raw_seated_1080x1920_hevc.mp4", root / "phone" / "IMG_0001.MP4")
    bad_media.rotated(media_dir, root / "phone" / "IMG_0002.MOV")
    folder_media.cut_short(media_dir / "talking_lyl_7s.mp4", root / "cut short.mp4", 0.6)
    folder_media.face_gap(media_dir, root / "face gap.mov")
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 1000)
    (root / "notes.txt").write_text("not a video either, and not listed")
    return root


def _build(videos: Path, out: Path, work: Path | None = None, **options: object) -> BuildResult:
    cfg = BuildConfig(dataset="folder", out=str(out), work_dir=str(work or out / "_work"), metadata=str(videos),
                      workers=2, cut=CutSettings(size=128), shard_samples=2, segment=SegmentSettings(), **options)
    return run_build(cfg, Console(file=open(os.devnull, "w")))


def _released(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def _face_centres(out: Path) -> dict[str, np.ndarray]:
    """The median centre of the landmark box of each shard clip, in [0, 1] of the output frame."""
    centres = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".lmks.npy"):
                    lmks = np.load(io.BytesIO(archive.extractfile(member).read()))[..., :2]
                    seen = np.isfinite(lmks).all(axis=(1, 2))
                    centres[member.name.split(".")[0]] = np.median((lmks[seen].min(1) + lmks[seen].max(1)) / 2, 0)
    return centres


@pytest.fixture(scope="module")
def first(videos: Path, tmp_path_factory: pytest.TempPathFactory, local_ray: None) -> tuple[Path, BuildResult]:
    out = tmp_path_factory.mktemp("folder_a")
    return out, _build(videos, out)


def test_folder_build_cuts_crops_and_reports(first: tuple[Path, BuildResult], videos: Path) -> None:
    out, result = first
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source_id"], []).append(row)
    phone, turned, gap, short, broken = (folder.source_id(p) for p in (
        "phone/IMG_0001.MP4", "phone/IMG_0002.MOV", "face gap.mov", "cut short.mp4", "broken.mp4"))
    assert sorted(by_source) == sorted([phone, turned, gap, short, broken])
    decoded, undecoded = by_source[short]  # the clip of the part that decodes, then the rest
    assert (decoded["status"], decoded["span_start_s"]) == ("ok", 0.0) and decoded["span_end_s"] >= 4.0
    assert (undecoded["status"], undecoded["failed_stage"], undecoded["reason"]) == ("failed", "segment",
                                                                                     "corrupt_source")
    assert 0 < undecoded["span_start_s"] - decoded["span_end_s"] <= 0.2  # the clip stops a scan frame early
    assert undecoded["span_end_s"] == pytest.approx(7.767, abs=0.01)
    [bad] = by_source[broken]
    assert (bad["status"], bad["failed_stage"], bad["reason"]) == ("failed", "segment", "unreadable_source")
    assert [(r["status"], r["span_start_s"], r["span_end_s"]) for r in by_source[phone]] == [("ok", 0.0, 9.9)]
    assert [(r["status"], r["source_width"], r["source_height"]) for r in by_source[turned]] == [("ok", 384, 512)]
    spans = [(r["span_start_s"], r["span_end_s"]) for r in by_source[gap]]
    assert len(spans) == 2 and spans[0][0] == 0.0 and spans[0][1] <= 3.0 and spans[1][0] >= 4.0
    for row in by_source[phone] + by_source[turned] + by_source[gap] + [decoded]:
        assert row["status"] == "ok" and row["span_end_s"] - row["span_start_s"] >= 2.0
        x, y, w, h = row["crop_box"]
        assert w == h and 0 < x + w / 2 < row["source_width"] and 0 < y + h / 2 < row["source_height"]
        provenance = json.loads(row["provenance"])
        assert provenance["crop_rule"].startswith("face x1.5") and provenance["file"] in (
            "phone/IMG_0001.MP4", "phone/IMG_0002.MOV", "face gap.mov", "cut short.mp4")
    centres = _face_centres(out)
    assert sorted(centres) == sorted(r["clip_id"] for r in rows if r["status"] == "ok")
    for clip_id, centre in centres.items():
        assert np.abs(centre - 0.5).max() <= 0.10, (clip_id, centre)
    assert result.failed == 2
    assert result.sources == {"folder": 4}, "the videos with clips are read where they are, nothing is fetched"


def test_two_folder_builds_are_byte_identical(first: tuple[Path, BuildResult], videos: Path,
                                              tmp_path: Path) -> None:
    out, _ = first
    _build(videos, tmp_path / "b")
    assert _released(tmp_path / "b") == _released(out)


def test_limit_counts_clips_not_videos(first: tuple[Path, BuildResult], videos: Path, tmp_path: Path) -> None:
    """``--limit 2`` gives the first two entries of the whole build (one video's two clips, or
    a failed video's row and a clip), as it does for the datasets with metadata."""
    out, _ = first
    work = tmp_path / "work"
    shutil.copytree(out / "_work", work, symlinks=True)  # finished clips are restored, not redone
    limited = _build(videos, tmp_path / "limited", work, limit=2)
    ids = [r["clip_id"] for r in pq.read_table(tmp_path / "limited" / "manifest.parquet").to_pylist()]
    assert ids == [r["clip_id"] for r in pq.read_table(out / "manifest.parquet").to_pylist()][:2]
    assert len(limited.states) == 2


def test_adding_and_removing_videos(first: tuple[Path, BuildResult], videos: Path, media_dir: Path) -> None:
    out, _ = first
    before = json.loads((out / "release.json").read_text())
    folder_media.two_speakers(media_dir, videos / "two speakers.mp4")
    try:
        added = _build(videos, out)
    finally:
        (videos / "two speakers.mp4").unlink()
    changes = added.release["changes"]
    new = folder.source_id("two speakers.mp4")
    assert changes["clips"]["added"] == [f"{new}-t0000000", f"{new}-t0004100"] and not changes["clips"]["removed"]
    assert changes["shards"]["unchanged"] == sorted(s["name"] for s in before["shards"])
    assert changes["shards"]["written"] and not changes["shards"]["removed"]
    removed = _build(videos, out)  # the new video is gone again
    assert removed.release["changes"]["clips"]["removed"] == changes["clips"]["added"]
