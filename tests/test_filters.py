"""Curation rules, settings and sub-clip records (pure functions)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aniportrait.filters import RuleError, first_broken, parse_rule, parse_rules, scene_parts
from aniportrait.schema import ClipInfo, ClipRecord
from pipelines.build.curation import CurationSettings, load_curation


def test_rules_read_aliases_and_spell_themselves_canonically() -> None:
    rules = parse_rules("face_px >= 150, sync_conf>=3,yaw<40.5")
    assert [r.text for r in rules] == ["face_px_median>=150", "sync_conf>=3", "yaw_range_deg<40.5"]
    assert parse_rules(["face_px>=1", "jitter<=0.2,brightness>20"]) == (
        parse_rule("face_px_median>=1"), parse_rule("jitter<=0.2"), parse_rule("brightness>20"))
    assert parse_rules("") == ()


@pytest.mark.parametrize("text, needle", [
    ("face_px=>150", "write it as"),
    ("face_px>=", "write it as"),
    ("nose_size>=3", "unknown score 'nose_size'"),
    ("scene_cuts>=1", "is a list<item: int32>, not a number"),
])
def test_bad_rules_say_what_is_accepted(text: str, needle: str) -> None:
    with pytest.raises(RuleError, match=needle):
        parse_rule(text)


def test_first_broken_rule_in_order_and_missing_scores_break_rules() -> None:
    rules = parse_rules("face_px>=150,sync_conf>=3")
    assert first_broken(rules, ClipInfo(face_px_median=200.0, sync_conf=5.0)) is None
    assert first_broken(rules, ClipInfo(face_px_median=100.0, sync_conf=1.0)).text == "face_px_median>=150"
    assert first_broken(rules, ClipInfo(face_px_median=200.0, sync_conf=None)).text == "sync_conf>=3"
    assert first_broken(rules, ClipInfo(face_px_median=200.0)).text == "sync_conf>=3"
    assert first_broken(rules, ClipInfo(face_px_median=math.nan, sync_conf=9.0)).text == "face_px_median>=150"


def test_derived_scores_can_be_filtered() -> None:
    assert first_broken(parse_rules("sync_offset_abs<=2"), ClipInfo(sync_offset=-3)).text == "sync_offset_abs<=2"
    assert first_broken(parse_rules("sync_offset_abs<=2"), ClipInfo(sync_offset=-2)) is None
    assert first_broken(parse_rules("scene_cut_count==0"), ClipInfo(scene_cuts=[40])) is not None
    assert first_broken(parse_rules("scene_cut_count==0"), ClipInfo()) is None


def test_scene_parts_drop_short_shots() -> None:
    assert scene_parts(100, [], 10) == [(0, 100)]
    assert scene_parts(100, [60], 10) == [(0, 60), (60, 100)]
    assert scene_parts(100, [5, 60, 60], 10) == [(5, 60), (60, 100)]
    assert scene_parts(100, [0, 100, 50], 60) == []


def test_curation_settings_canonical_and_validated(tmp_path: Path) -> None:
    assert CurationSettings(filter=("face_px >= 150",)) == CurationSettings(filter=("face_px_median>=150",))
    with pytest.raises(ValueError, match="scene_cuts must be one of"):
        CurationSettings(scene_cuts="merge")
    config = tmp_path / "curation.toml"
    config.write_text('filter = ["face_px >= 150", "sync_conf>=3"]\nscene_cuts = "reject"\nfix_sync = true\n')
    settings = load_curation(config, scene_cuts="keep", fix_sync=None)
    assert settings.filter == ("face_px_median>=150", "sync_conf>=3")
    assert (settings.scene_cuts, settings.fix_sync) == ("keep", True)
    config.write_text('filters = ["face_px>=1"]\n')
    with pytest.raises(ValueError, match="unknown setting"):
        load_curation(config)


def test_sub_clip_records_have_stable_ids_and_spans() -> None:
    record = ClipRecord(dataset="vfhq", clip_id="Clip_1", source_id="src", source_url=None, mirror_names=(),
                        start_frame=300, end_frame=600, source_fps=25.0)
    part = record.part(60, 150, 30.0)
    assert part.clip_id == "Clip_1-f00060"
    assert part.time_span() == pytest.approx((12.0 + 2.0, 12.0 + 5.0))
    assert part.parent_clip_id == "Clip_1" and record.parent_clip_id is None
    assert ClipRecord.from_dict(part.to_dict()) == part
