"""The score contract: every score is declared once in ``aniportrait.scores`` and read from there.

Pure checks: the built-in registry gives the manifest its columns (and so its bytes), agrees
with ``ClipInfo`` and ``QualityScores``, and refuses entries that do not fit; ``ClipInfo``
round-trips exactly (a fact no stage recorded stays absent). Then a toy score, registered in
this process only (this module cannot be imported by a Ray worker), flows through the real
local-Ray build (computed in the workers), a ``--filter`` rule, ``scores``, ``stats`` and the
card, and is gone after its module.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from rich.console import Console
from sample_lists import SAMPLE_SIZE, copy_work
from typer.testing import CliRunner

import cli
from aniportrait.filters import RuleError, parse_rule
from aniportrait.format import BLENDSHAPES, HAS_FACE, LANDMARKS, MESH, POSE6D, iter_samples, read_array
from aniportrait.manifest import FACT_COLUMNS, manifest_schema
from aniportrait.media.cut import CutSettings
from aniportrait.quality import QualityScores, mouth_opening
from aniportrait.schema import ClipInfo, ClipRecord, ClipState
from aniportrait.scores import (
    SCORES,
    Histogram,
    Score,
    ScoreError,
    ScoreInput,
    ScoreRegistry,
    compute_scores,
    registered,
)
from datasets_spec import sample
from pipelines.build.config import BuildConfig
from pipelines.build.curation import CurationSettings
from pipelines.build.run import BuildResult, run_build
from pipelines.build.stages.quality import ScoreQuality
from pipelines.tools.card import README_NAME, write_card
from pipelines.tools.report import manifest_stats

#: The manifest's columns before the registry existed: the built-in registry must keep them.
MANIFEST_COLUMNS = [
    "clip_id", "dataset", "split", "status", "error", "failed_stage", "reason", "shard", "generation", "source_id",
    "source_url", "span_start_s", "span_end_s", "frames", "fps", "duration_s", "width", "height", "has_audio",
    "audio_samples", "audio_note", "audio_features", "audio_model", "face_rate", "face_px_median", "face_px_min",
    "yaw_range_deg", "pitch_range_deg", "roll_range_deg", "jitter", "sharpness", "brightness", "scene_cuts",
    "faces_max", "second_face_rate", "track_jumps", "sync_offset", "sync_conf", "sync_score0", "sync_note",
    "audio_shift_frames", "parent_clip_id", "crop_box", "source_width", "source_height", "source_fps",
    "source_codec", "provenance",
]


def mouth_open_mean(clip: ScoreInput) -> float | None:
    """Mean inner-lip gap over face height on the frames with a face."""
    opening = mouth_opening(clip.lmks, clip.has_face, clip.info.width, clip.info.height)
    seen = np.isfinite(opening)
    return float(opening[seen].mean()) if seen.any() else None


TOY = Score("mouth_open_mean", pa.float64(), "mean inner-lip gap over face height", "face heights", ("mouth",),
            Histogram("quality", bins=10), compute=mouth_open_mean)


# ---------------------------------------------------------------------------- the registry itself

def test_built_in_scores_keep_the_manifest_columns() -> None:
    assert manifest_schema().names == MANIFEST_COLUMNS
    assert SCORES.computed == ()
    with registered(TOY):
        names = manifest_schema().names
        assert names[names.index("sync_score0") + 1] == "mouth_open_mean"
        assert manifest_schema().field("mouth_open_mean").type == pa.float64()
    assert manifest_schema().names == MANIFEST_COLUMNS


def test_registry_agrees_with_the_clip_facts() -> None:
    """Every list that named scores by hand now derives from the registry or ``ClipInfo``."""
    for score in SCORES:
        if score.compute is None and score.derive is None:
            assert score.name in ClipInfo.FACTS, score.name
        assert (score.name in manifest_schema().names) == (score.derive is None), score.name
    quality = [f.name for f in dataclasses.fields(QualityScores)]
    assert set(quality) <= set(ClipInfo.FACTS)
    assert [name for name in quality if name not in SCORES] == ["sync_note"]
    assert set(FACT_COLUMNS) <= set(ClipInfo.FACTS)
    assert {alias: SCORES.resolve(alias).name for s in SCORES for alias in s.aliases} == {
        "face_px": "face_px_median", "yaw": "yaw_range_deg", "pitch": "pitch_range_deg", "roll": "roll_range_deg",
        "sync": "sync_conf"}


@pytest.mark.parametrize("make, needle", [
    (lambda: Score("face_px_median", pa.float64(), "again", compute=mouth_open_mean), "already names a score"),
    (lambda: dataclasses.replace(TOY, aliases=("yaw",)), "'yaw' already names a score"),
    (lambda: Score("frames", pa.int32(), "frame count again", compute=mouth_open_mean), "name of a clip fact"),
    (lambda: Score("nose_size", pa.float64(), "no stage records it"), "has no compute function"),
    (lambda: Score("mouth_list", pa.list_(pa.int32()), "a list", plot=None, compute=mouth_open_mean),
     "a computed score is a number"),
    (lambda: Score("mouth_text", pa.string(), "a text", compute=mouth_open_mean), "a computed score is a number"),
    (lambda: Score("mouth", pa.float64(), "bad figure", plot=Histogram("mouths"), compute=mouth_open_mean),
     "unknown card figure"),
    (lambda: Score("mouth", pa.float64(), "derived", derive=lambda info: 1.0), "has no manifest column"),
    (lambda: Score("mouth-open", pa.float64(), "not an identifier", compute=mouth_open_mean), "not an identifier"),
])
def test_bad_scores_are_refused(make, needle: str) -> None:
    before = [s.name for s in SCORES]
    with pytest.raises(ValueError, match=needle):
        SCORES.register(make())
    assert [s.name for s in SCORES] == before


def test_registered_is_undone_after_its_block() -> None:
    with registered(TOY):
        assert "mouth_open_mean" in SCORES and parse_rule("mouth >= 0.05").text == "mouth_open_mean>=0.05"
        with pytest.raises(ValueError, match="already names a score"):
            SCORES.register(TOY)
    assert "mouth_open_mean" not in SCORES
    with pytest.raises(RuleError, match="unknown score 'mouth'"):
        parse_rule("mouth>=0.05")
    with pytest.raises(RuntimeError), registered(TOY):
        raise RuntimeError("a failing block still unregisters")
    assert "mouth_open_mean" not in SCORES


def test_computed_values_are_stored_rounded_and_errors_name_the_score() -> None:
    clip = ScoreInput(np.zeros((2, 478, 3)), np.zeros((2, 468, 3)), np.zeros((2, 6)), np.zeros((2, 52)),
                      np.ones(2, bool), None, 16000, ClipInfo(width=256, height=256))
    count = Score("open_frames", pa.int32(), "frames", compute=lambda c: np.float64(2.0))
    ratio = Score("ratio", pa.float64(), "a third", compute=lambda c: 1 / 3)
    missing = Score("missing", pa.float64(), "not measured", compute=lambda c: math.nan)
    values = compute_scores([count, ratio, missing, SCORES["jitter"]], clip)
    assert values == {"open_frames": 2, "ratio": 0.333333, "missing": None}
    assert type(values["open_frames"]) is int
    broken = Score("broken", pa.float64(), "raises", compute=lambda c: 1 / 0)
    with pytest.raises(ScoreError, match="score 'broken' failed: ZeroDivisionError"):
        compute_scores([broken], clip)


def test_quality_stage_settings_name_the_added_scores(tmp_path: Path) -> None:
    """The built-in registry leaves the quality stage's settings (its cache key) as they were."""
    assert ScoreQuality(str(tmp_path), SCORES).settings == {"sync_max_offset": 15}
    with registered(TOY):
        stage = ScoreQuality(str(tmp_path), ScoreRegistry(SCORES))
    assert stage.settings == {"sync_max_offset": 15, "scores": {"mouth_open_mean": 1}}


def test_clip_info_round_trips_exactly() -> None:
    info = ClipInfo(frames=90, audio_note=None)
    assert info.to_dict() == {"frames": 90, "audio_note": None}
    assert info.fps is None and "fps" not in info.to_dict()
    info.sync_conf = None
    info.scores["mouth_open_mean"] = 0.05
    data = info.to_dict()
    assert data == {"frames": 90, "audio_note": None, "sync_conf": None, "scores": {"mouth_open_mean": 0.05}}
    assert ClipInfo.from_dict(json.loads(json.dumps(data))) == info
    assert ClipInfo() != ClipInfo(fps=None)
    with pytest.raises(AttributeError, match="no fact 'nose'"):
        info.nose = 1
    with pytest.raises(AttributeError, match="no fact 'nose'"):
        ClipInfo.from_dict({"nose": 1})
    record = ClipRecord(dataset="t", clip_id="c", source_id="s", source_url=None, mirror_names=(), start_s=0.0,
                        end_s=1.0)
    state = ClipState(record, info=info)
    assert state.to_dict()["info"] == data
    assert ClipState.from_row(state.to_row()) == state


# ---------------------------------------------------------------------------- a toy score in a real build

@pytest.fixture(scope="module")
def toy() -> Iterator[Score]:
    """The toy score, registered in this process for this module only."""
    with registered(TOY):
        yield TOY


def _samples(out: Path) -> dict[str, dict]:
    return {s["__key__"]: s for s in iter_samples(str(out), [p.name for p in sorted(out.glob("*.tar"))])}


def _rows(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def _facts(row: dict) -> dict:
    """A manifest row but its verdict (the toy rule rejects one clip) and the toy score."""
    return {k: v for k, v in row.items() if k not in ("status", "error", "failed_stage", "reason", "shard", "mouth_open_mean")}


def _expected(reference: Path) -> dict[str, float]:
    """The toy score of each clip of the reference build, computed here from its shards."""
    values = {}
    for key, sample_ in _samples(reference).items():
        arrays = [read_array(sample_, member) for member in (LANDMARKS, MESH, POSE6D, BLENDSHAPES, HAS_FACE)]
        info = ClipInfo.from_dict(json.loads(sample_["json"])["info"])
        values[key] = TOY.stored(mouth_open_mean(ScoreInput(*arrays, None, 16000, info)))
    return values


@pytest.fixture(scope="module")
def toy_build(toy: Score, sample_build: tuple[Path, BuildResult], local_ray: None,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The sample built again with the toy score and a rule on it that rejects the clip with
    the lowest value (``--keep-rejected``), resumed from a copy of ``sample_build``'s work area
    (only the quality stage onwards runs), on a local Ray with two workers."""
    reference, _ = sample_build
    expected = _expected(reference)
    rule = f"mouth>={sorted(expected.values())[1]:g}"
    root = tmp_path_factory.mktemp("toy_score")
    cfg = BuildConfig(dataset="sample", out=str(root / "out"), work_dir=str(copy_work(reference, root / "work")),
                      mirror=str(sample.default_mirror()), workers=2, cut=CutSettings(size=SAMPLE_SIZE),
                      keep_rejected=True, curation=CurationSettings(filter=(rule,)))
    # What a worker can import: not this module (so the score's code must travel by value).
    importable = ray.get(ray.remote(importlib.util.find_spec).remote(__name__))
    result = run_build(cfg, Console(file=io.StringIO()))
    yield {"reference": reference, "out": root / "out", "rule": rule.replace("mouth", "mouth_open_mean"),
           "expected": expected, "result": result, "importable": importable}


@pytest.mark.slow
def test_the_toy_score_is_computed_in_the_workers(toy_build: dict) -> None:
    assert toy_build["importable"] is None, "a worker could import this module: the test proves nothing"
    result = toy_build["result"]
    assert result.failed == 0, [s.error for s in result.states if s.error]
    assert result.stage_seconds.get("quality", 0) > 0, "the quality stage ran (not restored from the copy)"
    assert all(not worker.endswith(f":{os.getpid()}") for worker in result.worker_peak_rss_mb)
    rows, reference = _rows(toy_build["out"]), _rows(toy_build["reference"])
    assert sorted(rows) == sorted(reference)
    assert {key: row["mouth_open_mean"] for key, row in rows.items()} == toy_build["expected"]
    assert all(isinstance(v, float) and 0 < v < 0.5 for v in toy_build["expected"].values())
    assert {key: _facts(row) for key, row in rows.items()} == {key: _facts(row) for key, row in reference.items()}
    samples, reference_samples = _samples(toy_build["out"]), _samples(toy_build["reference"])
    assert sorted(samples) == sorted(rows), "the rejected clip is in a rejected shard"
    for key, sample_ in samples.items():
        info = json.loads(sample_["json"])["info"]
        assert info.pop("scores") == {"mouth_open_mean": rows[key]["mouth_open_mean"]}
        assert info == json.loads(reference_samples[key]["json"])["info"]


@pytest.mark.slow
def test_a_rule_on_the_toy_score_filters_with_its_reason(toy_build: dict) -> None:
    rule = toy_build["rule"]
    rows = _rows(toy_build["out"])
    lowest = min(rows, key=lambda key: rows[key]["mouth_open_mean"])
    for key, row in rows.items():
        if key == lowest:
            assert (row["status"], row["error"], row["reason"]) == ("filtered", f"filtered:{rule}", "filter_rule")
        else:
            assert (row["status"], row["error"], row["reason"]) == ("ok", None, None)
    release = json.loads((toy_build["out"] / "release.json").read_text())
    assert release["counts"]["filtered"] == 1 and release["config"]["curation"]["filter"] == [rule]


@pytest.mark.slow
def test_scores_stats_and_card_show_the_toy_score(toy_build: dict) -> None:
    listed = CliRunner().invoke(cli.app, ["scores"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.output.splitlines() if "mouth_open_mean" in line]
    assert "double" in row and "mouth" in row and "mean inner-lip gap over face height" in row
    assert "test_score_registry.mouth_open_mean" in row

    console = Console(record=True, width=200, file=io.StringIO())
    manifest_stats(str(toy_build["out"]), console)
    text = console.export_text()
    [removed] = [line for line in text.splitlines() if toy_build["rule"] in line]
    assert removed.split("│")[1].strip() == "1", "clips removed per rule"
    [line] = [line for line in text.splitlines() if "mouth_open_mean" in line and "face heights" in line]
    assert [cell.strip() for cell in line.split("│")][1:4] == ["mouth_open_mean", "face heights", "3"]

    out = toy_build["out"]
    result = write_card(str(out))
    readme = (out / README_NAME).read_text()
    assert "## Scores" in readme and "| `mouth_open_mean` | face heights | mean inner-lip gap" in readme
    assert "`mouth_open_mean`" in readme.split("### Per-clip quality measures")[1].split("###")[0]
    assert any(Path(p).name == "quality.png" for p in result.plots)
