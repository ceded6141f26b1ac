"""Versioned, append-only releases, ``--retry-failed``, ``--shard-size`` and rejected shards.

The planner tests use real work-area files and real webdataset shards; the release tests
run real local Ray builds of the embedded sample (or of its videos with one source
served over loopback HTTP), each build shared by the tests of its fixture. Where a test is
about releases, not processing, its work area starts as a copy of the shared sample build's
(``conftest.sample_build``), so clips done there are resumed from their markers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from loopback import serve_directory
from rich.console import Console
from sample_lists import SAMPLE_SIZE, copy_work

from aniportrait.media.cut import CutSettings
from aniportrait.schema import (
    STATUS_FAILED,
    STATUS_FILTERED,
    STATUS_OK,
    STATUS_SPLIT,
    ClipInfo,
    ClipRecord,
    ClipState,
)
from aniportrait.storage import OutputDir
from datasets_spec import sample
from pipelines.build.run import run_build
from pipelines.build.config import BuildConfig, parse_shard_size
from pipelines.build.pack import WriteShard, plan_rows, plan_shards, shard_size
from pipelines.build.release import assign_generations, read_previous
from pipelines.build.workarea import WorkArea

SAMPLE_IDS = ["LylTalking_0", "LylTalking_1", "Radio10_0"]
RELEASE = "release.json"


# --- planner: real files, real shards, no Ray -------------------------------------------


def _clip(work: WorkArea, clip_id: str, sizes: dict[str, int], status: str = STATUS_OK) -> ClipState:
    """A clip state whose member files exist in ``work`` with the given sizes."""
    record = ClipRecord(dataset="t", clip_id=clip_id, source_id="src", source_url=None, mirror_names=(),
                        start_s=0.0, end_s=1.0)
    outputs = {}
    for member, size in sizes.items():
        work.clip_file(clip_id, f"out.{member}").write_bytes(os.urandom(size))
        outputs[member] = f"out.{member}"
    return ClipState(record, status=status, outputs=outputs, info=ClipInfo(frames=sizes.get("mp4", 0)))


def _write(plans: list, out: Path, work: WorkArea) -> dict[str, dict]:
    out.mkdir(exist_ok=True)
    writer = WriteShard(str(out), str(work.root))
    return {row["name"]: writer.write(row) for row in plan_rows(plans)}


def test_shard_size_reads_si_and_iec_units_or_a_clip_count() -> None:
    assert parse_shard_size("1GB") == (None, 1000**3)
    assert parse_shard_size("500MB") == (None, 500 * 1000**2)
    assert parse_shard_size("64KiB") == (None, 64 * 1024)
    assert parse_shard_size("1.5gib") == (None, 3 * 1024**3 // 2)
    assert parse_shard_size("1000") == (1000, None)
    with pytest.raises(ValueError, match="64KiB"):
        parse_shard_size("12 parsecs")
    with pytest.raises(ValueError, match="not both"):
        BuildConfig(dataset="sample", out="o", work_dir="w", shard_samples=10, shard_bytes=10)
    assert BuildConfig(dataset="sample", out="o", work_dir="w").shard_samples == 1000


def test_cli_refuses_two_shard_sizes_or_a_bad_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    both = runner.invoke(app, ["build", "--out", str(tmp_path / "o"), "--shard-size", "1GB", "--shard-samples", "5"])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(app, ["build", "--out", str(tmp_path / "o"), "--shard-size", "12 parsecs"])
    assert bad.exit_code == 2 and "1GB" in bad.output
    assert not (tmp_path / "o").exists(), "a usage error builds nothing"


def test_byte_sized_shards_stay_under_the_size_which_is_predicted_exactly(tmp_path: Path) -> None:
    work = WorkArea(tmp_path / "work")
    long_id = "x" * 120  # member names over 100 characters take pax headers
    states = [_clip(work, f"c{i}", {"mp4": 3000 + 997 * i, "wav": 700, "lmks.npy": 5000}) for i in range(6)]
    states += [_clip(work, long_id, {"mp4": 1234, "blendshapes.npy": 77}),
               _clip(work, "huge", {"mp4": 60_000})]
    limit = 32 * 1024
    plans = plan_shards(states, "t", "train", {s.record.clip_id: 1 for s in states}, max_bytes=limit, work=work)
    written = _write(plans, tmp_path / "out", work)
    assert len(plans) > 2
    for plan in plans:
        size = (tmp_path / "out" / plan.name).stat().st_size
        assert written[plan.name]["size"] == size == shard_size(plan.states, work)
        assert size <= limit or len(plan.states) == 1
        if plan is not plans[-1]:  # a shard is cut only when the next clip would not fit
            nxt = plans[plans.index(plan) + 1].states[0]
            assert shard_size(plan.states + (nxt,), work) > limit
    assert [p.states[0].record.clip_id for p in plans if p.states[0].record.clip_id == "huge"] == ["huge"]
    keys = [s["__key__"] for p in plans for s in wds.WebDataset(str(tmp_path / "out" / p.name), shardshuffle=False)]
    assert keys == sorted(s.record.clip_id for s in states)


def test_shard_writer_actors_write_the_bytes_of_a_writer_in_this_process(local_ray: None, tmp_path: Path) -> None:
    import ray

    from pipelines.build.writers import MAX_WRITERS, ShardWriters, writer_count

    work = WorkArea(tmp_path / "work")
    states = [_clip(work, f"c{i}", {"mp4": 2000 + 31 * i, "lmks.npy": 900}) for i in range(5)]
    plans = plan_shards(states, "t", "train", {s.record.clip_id: 1 for s in states}, samples=2)
    here = _write(plans, tmp_path / "here", work)
    (tmp_path / "actors").mkdir()
    assert writer_count(2, len(states), 2) == 2 and writer_count(4, 3, 1000) == 1 and writer_count(3, 9, None) == 3
    assert writer_count(64, 10**6, None) == writer_count(64, 10**6, 1000) == MAX_WRITERS
    with ShardWriters(str(tmp_path / "actors"), str(work.root), 2) as writers:
        writers.start()
        actors = list(writers.actors)
        assert list(writers.write([])) == []
        by_actors = {row["name"]: row for row in writers.write(plan_rows(plans))}
    assert by_actors == here and len(here) == 3
    for name in here:
        assert (tmp_path / "actors" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "actors").iterdir()) == sorted(here), "no temporary file left"
    with pytest.raises(ray.exceptions.RayActorError):  # closed: the writers' processes are gone
        ray.get(actors[0].write.remote(plan_rows(plans)[0]), timeout=60)


def test_rejected_clips_get_shards_of_their_own_only_when_kept(tmp_path: Path) -> None:
    work = WorkArea(tmp_path / "work")
    states = [_clip(work, "a", {"mp4": 10}), _clip(work, "b", {"mp4": 10}, STATUS_FILTERED),
              _clip(work, "c", {"mp4": 10}, STATUS_FAILED), _clip(work, "d", {"mp4": 10}, STATUS_SPLIT),
              _clip(work, "e", {"mp4": 10}), _clip(work, "f", {"mp4": 10}, STATUS_FILTERED)]
    generations = {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 2}
    kept = plan_shards(states, "t", "train", generations, samples=10, keep_rejected=True)
    assert {p.name: [s.record.clip_id for s in p.states] for p in kept} == {
        "t-train-000000.tar": ["a"], "t-train-v002-000000.tar": ["e"],
        "t-train-rejected-000000.tar": ["b"], "t-train-rejected-v002-000000.tar": ["f"]}
    assert {p.name for p in kept if p.rejected} == {"t-train-rejected-000000.tar", "t-train-rejected-v002-000000.tar"}
    dropped = plan_shards(states, "t", "train", generations, samples=10)
    assert [p.name for p in dropped] == ["t-train-000000.tar", "t-train-v002-000000.tar"]
    written = _write(kept, tmp_path / "out", work)
    assert _keys(tmp_path / "out", "t-train-rejected-000000.tar") == ["b"]
    assert written["t-train-rejected-000000.tar"]["samples"] == 1


def test_a_missing_or_unreadable_previous_release_means_version_one(tmp_path: Path) -> None:
    out = OutputDir.from_uri(tmp_path)
    assert read_previous(out, "sample", "train") is None
    (tmp_path / RELEASE).write_text('{"dataset": "sample", "split": "train", "version": 4}')
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    assert read_previous(out, "sample", "train") is None
    assert assign_generations([_clip(WorkArea(tmp_path / "w"), "a", {})], None) == {"a": 1}


# --- real builds --------------------------------------------------------------------------


def _build(out: Path, **options: object):
    options.setdefault("mirror", str(sample.default_mirror()))
    cfg = BuildConfig(dataset="sample", out=str(out), work_dir=str(out / "_work"), workers=2,
                      cut=CutSettings(size=SAMPLE_SIZE), **options)
    return run_build(cfg, Console(file=open(os.devnull, "w")))


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    """Every released file (shards, manifest, release file): its bytes and mtime."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.iterdir()) if p.is_file()}


def _release(files: dict[str, tuple[bytes, int]]) -> dict:
    return json.loads(files[RELEASE][0])


def _keys(out: Path, shard: str) -> list[str]:
    return [s["__key__"] for s in wds.WebDataset(str(out / shard), shardshuffle=False)]


@pytest.fixture(scope="module")
def history(local_ray: None, sample_build: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One output folder through four builds: 2 clips, all 3, all 3 again, 2 again (every
    clip resumed from the work area of the shared sample build)."""
    out = tmp_path_factory.mktemp("versions") / "out"
    copy_work(sample_build[0], out / "_work")
    steps = {}
    for step, limit in (("v1", 2), ("v2", None), ("same", None), ("v3", 2)):
        _build(out, limit=limit)
        steps[step] = _files(out)
    steps["out"] = out
    return steps


def test_first_release_is_version_one_with_everything_added(history: dict) -> None:
    v1 = history["v1"]
    assert sorted(v1) == ["manifest.parquet", RELEASE, "sample-train-000000.tar"]
    release = _release(v1)
    assert release["version"] == 1 and release["rejected_shards"] == []
    assert release["changes"]["clips"] == {"added": SAMPLE_IDS[:2], "removed": [], "status": []}
    assert release["changes"]["shards"] == {"written": ["sample-train-000000.tar"], "unchanged": [], "removed": []}


def test_added_clips_get_new_shards_and_old_shards_stay_untouched(history: dict, tmp_path: Path) -> None:
    v1, v2 = history["v1"], history["v2"]
    assert v2["sample-train-000000.tar"] == v1["sample-train-000000.tar"], "bytes and mtime unchanged"
    release = _release(v2)
    assert release["version"] == 2
    assert release["changes"]["since_version"] == 1
    assert release["changes"]["clips"] == {"added": ["Radio10_0"], "removed": [], "status": []}
    assert release["changes"]["shards"] == {"written": ["sample-train-v002-000000.tar"],
                                            "unchanged": ["sample-train-000000.tar"], "removed": []}
    assert [s["name"] for s in release["shards"]] == ["sample-train-000000.tar", "sample-train-v002-000000.tar"]
    assert [s["generation"] for s in release["shards"]] == [1, 2]
    for entry in release["shards"]:
        (tmp_path / entry["name"]).write_bytes(v2[entry["name"]][0])
        assert entry["size"] == len(v2[entry["name"]][0])
    assert _keys(tmp_path, "sample-train-000000.tar") == SAMPLE_IDS[:2]
    assert _keys(tmp_path, "sample-train-v002-000000.tar") == ["Radio10_0"]


def test_v2_manifest_records_generation_and_shard(history: dict, tmp_path: Path) -> None:
    (tmp_path / "m.parquet").write_bytes(history["v2"]["manifest.parquet"][0])
    rows = {r["clip_id"]: r for r in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    assert {cid: (r["generation"], r["shard"]) for cid, r in rows.items()} == {
        "LylTalking_0": (1, "sample-train-000000.tar"), "LylTalking_1": (1, "sample-train-000000.tar"),
        "Radio10_0": (2, "sample-train-v002-000000.tar")}


def test_a_rebuild_with_no_change_rewrites_nothing(history: dict) -> None:
    assert history["same"] == history["v2"], "same bytes and mtimes, release.json included"


def test_removing_clips_removes_their_shards_only(history: dict) -> None:
    v2, v3, out = history["v2"], history["v3"], history["out"]
    assert sorted(v3) == ["manifest.parquet", RELEASE, "sample-train-000000.tar"]
    assert v3["sample-train-000000.tar"] == v2["sample-train-000000.tar"]
    release = _release(v3)
    assert release["version"] == 3
    assert release["changes"]["clips"] == {"added": [], "removed": ["Radio10_0"], "status": []}
    assert release["changes"]["shards"] == {"written": [], "unchanged": ["sample-train-000000.tar"],
                                            "removed": ["sample-train-v002-000000.tar"]}
    assert _keys(out, "sample-train-000000.tar") == SAMPLE_IDS[:2]


def test_byte_sized_shards_of_real_clips(history: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(history["out"], out)
    one = (out / "sample-train-000000.tar").stat().st_size  # both clips in one shard of exactly this size
    _build(out, limit=2, shard_samples=None, shard_bytes=one)
    same = _files(out)
    assert same["sample-train-000000.tar"] == history["v3"]["sample-train-000000.tar"]
    assert _release(same)["version"] == 4 and _release(same)["changes"]["config_changed"]
    result = _build(out, limit=2, shard_samples=None, shard_bytes=one - 1)
    names = [s["name"] for s in result.release["shards"]]
    assert names == ["sample-train-000000.tar", "sample-train-000001.tar"]
    assert all((out / n).stat().st_size <= one - 1 for n in names)
    assert [k for n in names for k in _keys(out, n)] == SAMPLE_IDS[:2]
    assert result.release["config"]["shard_bytes"] == one - 1 and result.release["config"]["shard_samples"] is None
    assert result.release["version"] == 5


# --- retry-failed --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retry(local_ray: None, sample_build: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The sample with Radio10's video served over HTTP instead of the mirror: first missing
    on the server (its download fails; the LylTalking clips are resumed from the shared sample
    build's work area), then put there; the build is rerun without and with ``--retry-failed``,
    and a fresh build (all of it processed) where the file was there from the start."""
    root = tmp_path_factory.mktemp("retry")
    mirror, www, meta = root / "mirror", root / "www", root / "meta"
    mirror.mkdir()
    www.mkdir()
    shutil.copyfile(sample.default_mirror() / "LylTalking.mp4", mirror / "LylTalking.mp4")
    shutil.copytree(sample.DATA_DIR, meta, ignore=shutil.ignore_patterns("mirror", "*.md"))
    steps: dict = {}
    with serve_directory(www) as base:
        urls = meta / "SAMPLE_video_url.txt"
        urls.write_text("".join(f"Radio10 {base}/Radio10.mp4\n" if line.startswith("Radio10 ") else line + "\n"
                                for line in urls.read_text().splitlines()))
        options = {"metadata": str(meta), "mirror": str(mirror)}
        out = root / "out"
        copy_work(sample_build[0], out / "_work", clips=SAMPLE_IDS[:2])
        steps["failed"] = _build(out, **options)
        steps["failed_files"] = _files(out)
        markers = out / "_work" / "clips"
        steps["markers"] = {p: p.stat().st_mtime_ns for p in markers.glob("LylTalking_*/*.done.json")}
        shutil.copyfile(sample.default_mirror() / "Radio10.mp4", www / "Radio10.mp4")
        steps["cached"] = _build(out, **options)
        steps["cached_files"] = _files(out)
        steps["retried"] = _build(out, retry_failed=True, **options)
        steps["markers_after"] = {p: p.stat().st_mtime_ns for p in steps["markers"]}
        steps["fresh"] = _build(root / "fresh", **options)
    steps["out"], steps["fresh_out"] = out, root / "fresh"
    return steps


def test_failed_download_is_recorded_and_cached(retry: dict) -> None:
    failed = {s.record.clip_id: s for s in retry["failed"].states if s.status == STATUS_FAILED}
    assert list(failed) == ["Radio10_0"] and failed["Radio10_0"].failed_stage == "download"
    assert "(http_error)" in failed["Radio10_0"].error
    assert retry["cached"].failed == 1, "without --retry-failed the recorded failure stands"
    assert retry["cached_files"] == retry["failed_files"], "nothing changed: nothing rewritten"


def test_retry_failed_gives_the_bytes_of_a_build_that_never_failed(retry: dict) -> None:
    assert retry["retried"].failed == 0
    got, want = _files(retry["out"]), _files(retry["fresh_out"])
    assert sorted(got) == sorted(want) == ["manifest.parquet", RELEASE, "sample-train-000000.tar"]
    for name in want:
        if name != RELEASE:
            assert got[name][0] == want[name][0], name
    release, fresh = _release(got), _release(want)
    assert (release["version"], fresh["version"]) == (2, 1)
    assert {k: v for k, v in release.items() if k not in ("version", "changes")} == \
           {k: v for k, v in fresh.items() if k not in ("version", "changes")}
    assert release["changes"]["clips"] == {
        "added": [], "removed": [], "status": [{"clip_id": "Radio10_0", "from": "failed", "to": "ok"}]}
    assert release["changes"]["shards"]["written"] == ["sample-train-000000.tar"]


def test_retry_failed_reruns_only_the_failed_clips(retry: dict) -> None:
    assert len(retry["markers"]) >= 6, "both LylTalking clips went through every stage"
    assert retry["markers_after"] == retry["markers"], "clips that had succeeded were not redone"
    assert retry["retried"].resumed == 2
