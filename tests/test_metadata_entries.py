"""Malformed metadata entries are reported one per clip and parsing goes on (issue 15).

With ``errors=[]`` every parser returns its good records and appends one
:class:`MetadataError` per clip of each malformed entry; with ``errors=None`` (strict)
the first malformed entry raises. Whole-source problems raise in both modes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_datasets_spec import _complete_celebvhq, _vfhq_text

from aniportrait.ids import is_safe_id, safe_id
from aniportrait.schema import ClipRecord
from datasets_spec import MetadataError, celebvhq, hdtf, sample, vfhq
from datasets_spec.errors import dedupe_entry_ids, fallback_entry_id


def _check_ids(records: list[ClipRecord], errors: list[MetadataError]) -> None:
    """Record ids and entry ids are all safe and unique; every error names its file."""
    ids = [r.clip_id for r in records] + [e.entry_id for e in errors]
    assert len(ids) == len(set(ids)), ids
    assert all(is_safe_id(i) for i in ids)
    for error in errors:
        assert error.path is not None and error.manifest_error().startswith(Path(error.path).name)


def _assert_entries(errors: list[MetadataError], expected: dict[str, str]) -> None:
    """Exactly the ``expected`` entry ids, each manifest error starting with the given text."""
    actual = {e.entry_id: e.manifest_error() for e in errors}
    assert len(actual) == len(errors) and actual.keys() == expected.keys()
    for entry_id, text in expected.items():
        assert actual[entry_id].startswith(text), (entry_id, actual[entry_id])


# --------------------------------------------------------------------------- the shared helper


def test_dedupe_entry_ids_records_first_then_earlier_errors_then_counter() -> None:
    record = ClipRecord(dataset="d", clip_id="A_0", source_id="A", source_url=None, mirror_names=())
    errors = [
        MetadataError("x", path="/m/f.txt", line=3, clip_id="A_0"),  # taken by the record
        MetadataError("x", path="/m/f.txt", line=4, clip_id="B_0"),
        MetadataError("x", path="/m/f.txt", line=5, clip_id="B_0"),  # taken by the error above
        MetadataError("x", path="/m/f.txt", line=5),  # same place as the one above
        MetadataError("x", path="/other/f.txt", line=5),  # same file name elsewhere
    ]
    dedupe_entry_ids([record], errors)
    assert [e.clip_id for e in errors] == [None, "B_0", None, None, None]
    l5 = fallback_entry_id("f.txt", 5)
    assert [e.entry_id for e in errors] == [
        fallback_entry_id("f.txt", 3),
        "B_0",
        l5,
        fallback_entry_id("f.txt", 5, repeat=2),
        fallback_entry_id("f.txt", 5, repeat=3),
    ]
    assert errors[3].provenance == {"file": "f.txt", "line": 5}


# --------------------------------------------------------------------------- HDTF

_URL = "https://www.youtube.com/watch?v="

RD = {
    "video_url": [
        f"Good {_URL}GGGGGGGGGGG",  # 1
        f"Spans {_URL}SSSSSSSSSSS",  # 2
        f"TwoUrls {_URL}TTTTTTTTTTT {_URL}UUUUUUUUUUU",  # 3: wrong field count, 2 clips fail
        f"Big Name {_URL}BBBBBBBBBBB",  # 4: a name with a space is a wrong field count
        f"Zoë {_URL}ZZZZZZZZZZZ",  # 5: non-ASCII is fine
        f"../../x {_URL}XXXXXXXXXXX",  # 6: hostile names are just names
        f"a;rm {_URL}RRRRRRRRRRR",  # 7
        f"Good {_URL}DDDDDDDDDDD",  # 8: listed twice
        f"BadRes {_URL}EEEEEEEEEEE",  # 9
        f"ResCount {_URL}FFFFFFFFFFF",  # 10
        f"Dup {_URL}HHHHHHHHHHH",  # 11
        f"BadCrop {_URL}IIIIIIIIIII",  # 12
        f"BadRatio {_URL}JJJJJJJJJJJ",  # 13
        "Stray",  # 14: malformed and of no clip
    ],
    "resolution": [
        "Good.mp4 720",
        "Spans 1080",
        "TwoUrls 720",
        "Big 720",
        "Zoë 720",
        "../../x 720",
        "a;rm 720",
        "BadRes high",  # 8: bad value, its clip fails
        "ResCount 720 1080",  # 9: wrong field count
        "Dup 720",
        "BadCrop 720",
        "BadRatio 720",
    ],
    "annotion_time": [
        "Good.mp4 00:01-00:11 00:20-00:30",  # 1
        "Spans 00:01-00:05 0x:10-00:20 00:30-00:20 00:40-00:40 00:50 01:00-01:10",  # 2
        "TwoUrls 00:01-00:05 00:06-00:09",  # 3
        "Big Name 00:01-00:05",  # 4
        "Zoë 00:01-00:05",  # 5
        "../../x 00:01-00:05",  # 6
        "a;rm 00:01-00:05",  # 7
        "BadRes 00:01-00:05",  # 8
        "ResCount 00:01-00:05",  # 9
        "NoUrl 00:01-00:05 00:06-00:08",  # 10
        "Dup 00:01-00:05",  # 11
        "Dup 00:10-00:15 00:20-00:25",  # 12: listed twice: both spans fail
        "BadCrop 00:01-00:05 00:06-00:09 00:10-00:12",  # 13
        "BadRatio 00:01-00:05",  # 14
    ],
    "crop_wh": [
        "Good_0.mp4 10 200 20 200",  # 1
        "Good_1 10 200 20 200",  # 2
        "BadCrop_0 1 2 3",  # 3: wrong field count
        "BadCrop_1 1 two 3 4",  # 4: not integers
        "BadCrop_2 1 0 3 4",  # 5: empty box
        "Good_0 1 2 3 4",  # 6: listed twice
        "Spans_9 1 2 3 4",  # 7: a clip not in annotion_time: only a warning
    ],
    "crop_ratio": ["Good_0 1.2", "BadRatio_0 x"],
}


def _write_lists(root: Path, prefix: str, lists: dict[str, list[str]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for kind, lines in lists.items():
        (root / f"{prefix}_{kind}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _one_video(name: str, spans: str = "00:01-00:02") -> dict[str, list[str]]:
    return {
        "video_url": [f"{name} {_URL}{name[:11]:_<11}"],
        "resolution": [f"{name} 720"],
        "annotion_time": [f"{name} {spans}"],
        "crop_wh": [f"{name}_0 1 2 3 4"],
        "crop_ratio": [f"{name}_0 1.0"],
    }


@pytest.fixture()
def hdtf_dir(tmp_path: Path) -> Path:
    root = tmp_path / "hdtf"
    _write_lists(root, "RD", RD)
    # another prefix: one good video, and a clip id RD already has (later subset: an error)
    xtra = _one_video("Own")
    xtra["video_url"].append(f"Good {_URL}KKKKKKKKKKK")
    xtra["resolution"].append("Good 720")
    xtra["annotion_time"].append("Good 00:40-00:50")
    _write_lists(root, "XTRA", xtra)
    # WDA has no crop_ratio list: each of its clips fails
    wda = _one_video("Miss", "00:01-00:02 00:03-00:04")
    del wda["crop_ratio"]
    _write_lists(root, "WDA", wda)
    # WRA has only its video_url list: one error for the subset
    _write_lists(root, "WRA", {"video_url": _one_video("Lost")["video_url"]})
    return root


def test_hdtf_reports_every_malformed_entry(hdtf_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[MetadataError] = []
    with caplog.at_level(logging.INFO, logger="datasets_spec.hdtf"):
        records = hdtf.prepare(hdtf_dir, errors=errors)
    assert hdtf.subsets_in(hdtf_dir) == ("RD", "WDA", "WRA", "XTRA")
    assert any("RD, WDA, WRA, XTRA" in m for m in caplog.messages)  # which subsets were read
    assert "RD_crop_wh.txt:7: crop for Spans_9, a clip not in RD_annotion_time.txt; ignored" in caplog.messages

    zoe, dots, semi = safe_id("Zoë_0"), safe_id("../../x_0"), safe_id("a;rm_0")
    assert sorted(r.clip_id for r in records) == sorted(
        ["Good_0", "Good_1", "Spans_0", "Spans_5", zoe, dots, semi, "Dup_0", "Own_0"]
    )
    clips = {r.clip_id: r for r in records}
    assert clips["Good_0"].source_url == f"{_URL}GGGGGGGGGGG"  # the first of the two URL lines
    assert clips["Good_0"].crop is not None and clips["Good_0"].crop.x1 == 210  # the first crop line
    assert clips["Good_0"].provenance["subset"] == "RD"
    assert (clips["Spans_5"].start_s, clips["Spans_5"].end_s) == (60.0, 70.0)  # k = position on the line
    assert clips[zoe].source_id == safe_id("Zoë") and clips[dots].source_id == safe_id("../../x")
    assert clips[semi].mirror_names == ("RRRRRRRRRRR",)  # an unsafe name is no mirror file name
    assert clips["Own_0"].provenance == {"subset": "XTRA", "file": "XTRA_annotion_time.txt", "line": 1}

    def fb(name: str, line: int | None = None, repeat: int = 1) -> str:
        return fallback_entry_id(name, line, repeat=repeat)

    url3 = f"RD_video_url.txt:3: wrong number of values after the name in 'TwoUrls {_URL}TTTTTTTTTTT {_URL}UUUUUUUUUUU'"
    url4 = f"RD_video_url.txt:4: wrong number of values after the name in 'Big Name {_URL}BBBBBBBBBBB'"
    missing_wra = "; ".join(f"missing HDTF list WRA_{kind}.txt" for kind in list(hdtf.LISTS)[1:])
    _assert_entries(errors, {
        "Spans_1": "RD_annotion_time.txt:2: malformed span '0x:10-00:20' (want mm:ss-mm:ss)",
        "Spans_2": "RD_annotion_time.txt:2: empty span '00:30-00:20'",
        "Spans_3": "RD_annotion_time.txt:2: empty span '00:40-00:40'",
        "Spans_4": "RD_annotion_time.txt:2: malformed span '00:50' (want mm:ss-mm:ss)",
        "TwoUrls_0": url3,
        "TwoUrls_1": url3,
        "Big_0": url4,
        "Big_1": url4,
        "BadRes_0": "RD_resolution.txt:8: resolution 'high' is not an integer",
        "ResCount_0": "RD_resolution.txt:9: wrong number of values after the name in 'ResCount 720 1080'",
        "NoUrl_0": "RD_annotion_time.txt:10: no URL for NoUrl in RD_video_url.txt",
        "NoUrl_1": "RD_annotion_time.txt:10: no URL for NoUrl in RD_video_url.txt",
        "BadCrop_0": "RD_crop_wh.txt:3: wrong number of values after the name in 'BadCrop_0 1 2 3'",
        "BadCrop_1": "RD_crop_wh.txt:4: bad crop '1 two 3 4': invalid literal for int() with base 10: 'two'",
        "BadCrop_2": "RD_crop_wh.txt:5: bad crop '1 0 3 4': empty crop box",
        "BadRatio_0": "RD_crop_ratio.txt:2: crop ratio 'x' is not a number",
        fb("RD_annotion_time.txt", 12): "RD_annotion_time.txt:12: 'Dup' already listed on line 11",
        fb("RD_annotion_time.txt", 12, 2): "RD_annotion_time.txt:12: 'Dup' already listed on line 11",
        fb("RD_video_url.txt", 8): "RD_video_url.txt:8: 'Good' already listed on line 1",
        fb("RD_video_url.txt", 14): "RD_video_url.txt:14: wrong number of values after the name in 'Stray'",
        fb("RD_crop_wh.txt", 6): "RD_crop_wh.txt:6: 'Good_0' already listed on line 1",
        "Miss_0": "WDA_annotion_time.txt:1: missing HDTF list WDA_crop_ratio.txt",
        "Miss_1": "WDA_annotion_time.txt:1: missing HDTF list WDA_crop_ratio.txt",
        fb("WRA_resolution.txt"): f"WRA_resolution.txt: {missing_wra}",
        fb("XTRA_annotion_time.txt", 2): "XTRA_annotion_time.txt:2: clip id 'Good_0' appears in subsets RD and XTRA",
    })
    assert len(errors) == 25  # one per failed clip or stray line
    _check_ids(records, errors)
    by_id = {e.entry_id: e for e in errors}
    assert by_id["Big_1"].source_id == "Big" and by_id["TwoUrls_0"].line == 3
    assert by_id["Miss_1"].provenance == {"file": "WDA_annotion_time.txt", "line": 1}
    assert by_id[fb("WRA_resolution.txt")].clip_id is None


def test_hdtf_strict_raises_the_first_malformed_entry(hdtf_dir: Path) -> None:
    with pytest.raises(MetadataError, match=r"RD_annotion_time\.txt:2: malformed span '0x:10-00:20'"):
        hdtf.prepare(hdtf_dir)
    with pytest.raises(MetadataError, match=r"WDA_crop_ratio\.txt: missing HDTF list"):
        hdtf.prepare(hdtf_dir, subsets=("WDA",))


def test_hdtf_odd_names_are_not_errors_and_rd_alone_is_read(tmp_path: Path) -> None:
    lists: dict[str, list[str]] = {kind: [] for kind in hdtf.LISTS}
    for name in ("Zoë", "../../x", "a;rm", "Plain"):
        for kind, lines in _one_video(name).items():
            lists[kind] += lines
    _write_lists(tmp_path, "RD", lists)
    errors: list[MetadataError] = []
    records = hdtf.prepare(tmp_path, errors=errors)
    assert errors == [] and records == hdtf.prepare(tmp_path)
    assert hdtf.subsets_in(tmp_path) == ("RD",) and {r.provenance["subset"] for r in records} == {"RD"}
    assert sorted(r.clip_id for r in records) == sorted(safe_id(f"{n}_0") for n in ("Zoë", "../../x", "a;rm", "Plain"))
    assert all(is_safe_id(r.clip_id) and is_safe_id(r.source_id) for r in records)


def test_hdtf_whole_source_errors_raise_in_both_modes(tmp_path: Path) -> None:
    (tmp_path / "RD_annotion_time.txt").write_text("A 00:01-00:02\n")
    for errors in (None, []):
        with pytest.raises(MetadataError, match=r"no <PREFIX>_video_url\.txt"):
            hdtf.prepare(tmp_path, errors=errors)
        with pytest.raises(MetadataError, match="not a directory"):
            hdtf.prepare(tmp_path / "nowhere", errors=errors)


def test_hdtf_real_lists_are_all_valid_entries(metadata_dir: Path) -> None:
    strict = hdtf.prepare()
    for directory in (None, metadata_dir / "hdtf"):
        errors: list[MetadataError] = []
        assert hdtf.prepare(directory, errors=errors) == strict
        assert errors == []
    assert len(strict) == 436
    errors = []
    assert sample.prepare(errors=errors) == sample.prepare() and errors == []


def test_errors_list_already_holding_entries_is_only_appended_to(hdtf_dir: Path) -> None:
    earlier = MetadataError("x", path="/m/other.txt", line=1, clip_id="Spans_1")
    errors = [earlier]
    hdtf.prepare(hdtf_dir, errors=errors)
    assert errors[0] is earlier and earlier.clip_id == "Spans_1"
    assert errors[1].entry_id == "Spans_1"  # only this parse's entries are made unique


# --------------------------------------------------------------------------- CelebV-HQ


@pytest.fixture(scope="module")
def celebvhq_info(metadata_dir: Path) -> dict:
    partial = metadata_dir / "celebvhq" / "celebvhq_info.head9836bytes.json.partial"
    return _complete_celebvhq(partial.read_text(encoding="utf-8"))


CELEBVHQ_BAD = {
    "box_above_1": {"bbox": {"top": 0.0, "bottom": 1.2, "left": 0.1, "right": 0.6}},
    "box_below_0": {"bbox": {"top": -0.1, "bottom": 0.8, "left": 0.1, "right": 0.6}},
    "box_empty": {"bbox": {"top": 0.5, "bottom": 0.5, "left": 0.1, "right": 0.6}},
    "no_duration": {"duration": None},
    "negative_start": {"duration": {"start_sec": -1.0, "end_sec": 3.0}},
    "end_before_start": {"duration": {"start_sec": 9.0, "end_sec": 3.0}},
    "text_duration": {"duration": {"start_sec": "1", "end_sec": "3"}},
    "bool_duration": {"duration": {"start_sec": False, "end_sec": True}},
    "no_ytb_id": {"ytb_id": None},
    "empty_ytb_id": {"ytb_id": ""},
    "short_appearance": {"attributes": {"appearance": [1], "action": [], "emotion": {"labels": "happy"}}},
}


def test_celebvhq_reports_every_malformed_clip(tmp_path: Path, celebvhq_info: dict) -> None:
    info = json.loads(json.dumps(celebvhq_info))
    template = info["clips"]["M2Ohb0FAaJU_1"]
    for key, change in CELEBVHQ_BAD.items():
        info["clips"][f"bad_{key}"] = {**template, **change}
    info["clips"]["bad not.an/object"] = ["M2Ohb0FAaJU", 1, 2]
    path = tmp_path / celebvhq.INFO_NAME
    path.write_text(json.dumps(info), encoding="utf-8")

    errors: list[MetadataError] = []
    records = celebvhq.prepare(path, errors=errors)
    assert [r.clip_id for r in records] == sorted(celebvhq_info["clips"])  # the 17 real clips
    assert len(errors) == len(CELEBVHQ_BAD) + 1
    _check_ids(records, errors)
    by_key = {e.key: e for e in errors}
    for key in CELEBVHQ_BAD:
        error = by_key[f"bad_{key}"]
        assert error.entry_id == f"bad_{key}"
        assert error.provenance == {"file": "celebvhq_info.json", "key": f"bad_{key}"}
        assert error.manifest_error().startswith(f"celebvhq_info.json: clip 'bad_{key}': ")
        assert error.source_id == (None if "ytb_id" in key else "M2Ohb0FAaJU")
    reasons = {key: by_key[f"bad_{key}"].reason.split(": ", 1)[1] for key in CELEBVHQ_BAD}
    assert reasons["box_above_1"] == (
        "bbox {'top': 0.0, 'bottom': 1.2, 'left': 0.1, 'right': 0.6} is not a non-empty box inside [0, 1]"
    )
    assert reasons["bool_duration"] == "bad duration {'start_sec': False, 'end_sec': True}"
    assert reasons["no_ytb_id"] == "missing ytb_id" and reasons["empty_ytb_id"] == "ytb_id '' is not a non-empty string"
    assert reasons["short_appearance"] == "attributes.appearance is not a 0/1 list of length 40"
    odd = by_key["bad not.an/object"]
    assert odd.entry_id == safe_id("bad not.an/object") and odd.source_id is None
    assert odd.reason == "clip 'bad not.an/object': not a JSON object: ['M2Ohb0FAaJU', 1, 2]"

    with pytest.raises(MetadataError, match=r"celebvhq_info\.json: clip 'bad_box_above_1': bbox"):
        celebvhq.prepare(path)


def test_celebvhq_whole_file_problems_raise_in_both_modes(tmp_path: Path, celebvhq_info: dict) -> None:
    cases = {
        "not_json.json": ("{", "invalid JSON"),
        "list.json": ("[]", "top level"),
        "no_clips.json": (json.dumps({"meta_info": celebvhq_info["meta_info"]}), '"clips"'),
        "no_meta.json": (json.dumps({"clips": {}}), "meta_info"),
    }
    for errors in (None, []):
        for name, (text, message) in cases.items():
            (tmp_path / name).write_text(text, encoding="utf-8")
            with pytest.raises(MetadataError, match=message):
                celebvhq.prepare(tmp_path / name, errors=errors)
        with pytest.raises(MetadataError, match="file not found"):
            celebvhq.prepare(tmp_path / "missing.json", errors=errors)


# --------------------------------------------------------------------------- VFHQ


def _vfhq(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_vfhq_reports_every_malformed_file(tmp_path: Path) -> None:
    good = _vfhq_text("abcdefghijk", 10, 50)
    _vfhq(tmp_path, "Clip+abcdefghijk+P0+C0+F10-50.txt", good)
    _vfhq(tmp_path, "Clip+-F_x9F3kLq0+P1+C2+F100-140.txt", _vfhq_text("-F_x9F3kLq0", 100, 140))
    bad = {
        "Clip+noCrop_____+P0+C0+F10-50.txt": _vfhq_text("noCrop_____", 10, 50, crop=None),
        "Clip+abcdefghijk+P0+F10-50.txt": good,  # no C<idx>: name cannot be parsed
        "Clip+reversed___+P0+C0+F300-200.txt": _vfhq_text("reversed___", 300, 200),
        "Clip+badFps_____+P0+C0+F10-50.txt": _vfhq_text("badFps_____", 10, 50, fps="0"),
        "Clip+badH_______+P0+C0+F10-50.txt": _vfhq_text("badH_______", 10, 50, height=0),
        "Clip+otherVideo_+P0+C0+F10-50.txt": _vfhq_text("zzzzzzzzzzz", 10, 50),
        "Clip+noW________+P0+C0+F10-50.txt": _vfhq_text("noW________", 10, 50).replace("W 1920\n", ""),
        "Clip+badCrop____+P0+C0+F10-50.txt": _vfhq_text("badCrop____", 10, 50, crop="CROP 5 5 5 9"),
        "Clip+latin1_____+P0+C0+F10-50.txt": _vfhq_text("latin1_____", 10, 50).encode() + b"\xe9\n",
        "deeper/Clip+abcdefghijk+P0+C0+F10-50.txt": good,  # the same clip again
    }
    for name, text in bad.items():
        _vfhq(tmp_path, name, text)
    (tmp_path / "notes" / "README.txt").parent.mkdir()
    (tmp_path / "notes" / "README.txt").write_text("not a meta-info file")

    errors: list[MetadataError] = []
    records = vfhq.prepare(tmp_path, errors=errors)
    assert [r.clip_id for r in records] == ["-F_x9F3kLq0_P1_C2_F100-140", "abcdefghijk_P0_C0_F10-50"]
    _check_ids(records, errors)
    _assert_entries(errors, {
        "noCrop______P0_C0_F10-50": "Clip+noCrop_____+P0+C0+F10-50.txt:46: missing final 'CROP x0 y0 x1 y1' line"
        " (last line is '00000049 0 812 208 298 371 902.31 356.10 1013.52 353.87 960.')",
        fallback_entry_id("Clip+abcdefghijk+P0+F10-50.txt"): "Clip+abcdefghijk+P0+F10-50.txt: file name "
        "'Clip+abcdefghijk+P0+F10-50.txt' is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt",
        "reversed____P0_C0_F300-200": "Clip+reversed___+P0+C0+F300-200.txt: "
        "frame span 'F300-200' keeps no frame (reversed or too short)",
        "badFps______P0_C0_F10-50": "Clip+badFps_____+P0+C0+F10-50.txt:4: FPS '0' is not a positive number",
        "badH________P0_C0_F10-50": "Clip+badH_______+P0+C0+F10-50.txt:2: H '0' is not a positive integer",
        "otherVideo__P0_C0_F10-50": "Clip+otherVideo_+P0+C0+F10-50.txt:1: "
        "Video line says 'zzzzzzzzzzz' but the file name says 'otherVideo_'",
        "noW_________P0_C0_F10-50": "Clip+noW________+P0+C0+F10-50.txt: missing header line(s) W",
        "badCrop_____P0_C0_F10-50": "Clip+badCrop____+P0+C0+F10-50.txt:47: bad CROP box '5 5 5 9': empty crop box",
        "latin1______P0_C0_F10-50": "Clip+latin1_____+P0+C0+F10-50.txt: "
        "not UTF-8 text (invalid continuation byte at byte 3972)",
        fallback_entry_id("Clip+abcdefghijk+P0+C0+F10-50.txt"): "Clip+abcdefghijk+P0+C0+F10-50.txt: "
        "clip abcdefghijk_P0_C0_F10-50 is described twice (also in Clip+abcdefghijk+P0+C0+F10-50.txt)",
    })
    by_id = {e.entry_id: e for e in errors}
    assert by_id["reversed____P0_C0_F300-200"].source_id == "reversed___"
    assert by_id[fallback_entry_id("Clip+abcdefghijk+P0+F10-50.txt")].source_id is None

    with pytest.raises(MetadataError, match=r"Clip\+abcdefghijk\+P0\+F10-50\.txt: file name"):
        vfhq.prepare(tmp_path)  # the first file in sorted order
    with pytest.raises(MetadataError, match=r"Clip\+noCrop_____\+P0\+C0\+F10-50\.txt:46: missing final 'CROP"):
        vfhq.prepare(tmp_path / "Clip+noCrop_____+P0+C0+F10-50.txt")


def test_vfhq_whole_source_errors_raise_in_both_modes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for errors in (None, []):
        with pytest.raises(MetadataError, match="no Clip"):
            vfhq.prepare(tmp_path / "empty", errors=errors)
        with pytest.raises(MetadataError, match="no such file or directory"):
            vfhq.prepare(tmp_path / "nowhere", errors=errors)
