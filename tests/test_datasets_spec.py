"""Tests of the dataset metadata parsers on the real metadata excerpts in ``../shared``."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import datasets_spec
from aniportrait.schema import ClipRecord, CropSpec
from datasets_spec import MetadataError, celebvhq, folder, hdtf, sample, vfhq
from datasets_spec.integrity import git_blob_sha1

HDTF_FILES = sorted(f"{s}_{kind}.txt" for s in hdtf.SUBSETS for kind in hdtf.LISTS)


def _by_id(records: list[ClipRecord]) -> dict[str, ClipRecord]:
    return {record.clip_id: record for record in records}


def test_package_api() -> None:
    modules = {"hdtf": hdtf, "celebvhq": celebvhq, "vfhq": vfhq, "sample": sample, "folder": folder}
    assert {name: module.SPEC for name, module in modules.items()} == datasets_spec.DATASETS
    assert issubclass(MetadataError, ValueError)
    for name, module in modules.items():
        assert module.SPEC.name == name and module.SPEC.prepare is module.prepare
        assert "Licen" in (module.__doc__ or "")


def test_sample_is_hdtf_format_with_shipped_sources() -> None:
    records = sample.prepare()
    assert [r.clip_id for r in records] == ["LylTalking_0", "LylTalking_1", "Radio10_0"]
    assert {r.dataset for r in records} == {"sample"}
    assert (records[1].start_s, records[1].end_s) == (3.0, 7.0)
    for record in records:
        assert any((sample.default_mirror() / f"{name}.mp4").is_file() for name in record.mirror_names)


def test_git_blob_sha1_matches_git() -> None:
    # ids git itself gives for an empty file and for "hello\n"
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


# --------------------------------------------------------------------------- HDTF


@pytest.fixture(scope="module")
def hdtf_records() -> list[ClipRecord]:
    return hdtf.prepare()


def test_hdtf_package_data_is_byte_exact(metadata_dir: Path) -> None:
    shipped = sorted(p.name for p in hdtf.DATA_DIR.glob("*.txt"))
    assert shipped == HDTF_FILES
    for name in HDTF_FILES:
        assert (hdtf.DATA_DIR / name).read_bytes() == (metadata_dir / "hdtf" / name).read_bytes(), name
    notice = (hdtf.DATA_DIR / "NOTICE.md").read_text(encoding="utf-8")
    for needle in ("CC BY 4.0", "github.com/MRzzm/HDTF", "CVPR 2021", "unmodified"):
        assert needle in notice


def test_hdtf_user_directory_gives_same_records(metadata_dir: Path, hdtf_records: list[ClipRecord]) -> None:
    assert hdtf.prepare(metadata_dir / "hdtf") == hdtf_records
    assert hdtf.prepare(str(metadata_dir / "hdtf")) == hdtf_records


def test_hdtf_counts(hdtf_records: list[ClipRecord]) -> None:
    assert len(hdtf_records) == 436
    assert Counter(r.provenance["subset"] for r in hdtf_records) == {"RD": 66, "WDA": 195, "WRA": 175}
    assert len({r.source_id for r in hdtf_records}) == 369
    assert Counter(r.max_height for r in hdtf_records)[None] == 2  # KevinMcCarthy1: resolution 0
    assert sorted(r.clip_id for r in hdtf_records if r.crop is None) == [
        "BillCassidy_0",
        "ByronDorgan0_0",
        "CandiceMiller_0",
        "DeanPhillips_0",
        "DuncanHunter_1",
        "JaimeHerreraBeutler_0",
        "JeffMerkley0_0",
        "JimMcGovern1_0",
        "JimMcGovern_0",
        "KevinBrady0_0",
        "KevinMcCarthy1_0",
        "KevinMcCarthy1_1",
        "LindaSnchez_0",
        "MittRomney_1",
        "Radio15_0",
        "Radio6_0",
        "RudyGiuliani_0",
    ]
    assert sum("crop_ratio" in r.extra for r in hdtf_records) == 421
    assert round(sum(r.end_s - r.start_s for r in hdtf_records)) == 61453  # seconds (17.07 h)


def test_hdtf_sorted_deterministic_and_uniform(hdtf_records: list[ClipRecord]) -> None:
    ids = [r.clip_id for r in hdtf_records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert hdtf.prepare() == hdtf_records
    for r in hdtf_records:
        assert r.dataset == "hdtf" and r.expect_audio and r.split == "train"
        assert r.source_url.startswith("https://www.youtube.com/watch?v=")
        assert len(r.mirror_names) == 2 and r.mirror_names[1] == r.source_id
        assert r.crop is None or (r.crop.kind == "pixels" and r.crop.ref_width is None)
        assert ClipRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_hdtf_specific_records(hdtf_records: list[ClipRecord]) -> None:
    clips = _by_id(hdtf_records)
    first, second = clips["Radio11_0"], clips["Radio11_1"]
    assert (first.start_s, first.end_s) == (30.0, 60.0)
    assert (second.start_s, second.end_s) == (90.0, 150.0)
    assert "Radio11_2" not in clips
    assert first.source_id == "Radio11"
    assert first.source_url == "https://www.youtube.com/watch?v=XtySvTwIOfw"
    assert first.mirror_names == ("XtySvTwIOfw", "Radio11")
    assert first.provenance == {"subset": "RD", "file": "RD_annotion_time.txt", "line": 3}
    assert first.extra == {"crop_ratio": 1.2}
    assert first.max_height == 720

    radio10 = clips["Radio10_0"]
    assert radio10.crop == CropSpec(kind="pixels", x0=483, y0=0, x1=873, y1=390, ref_height=720)
    assert radio10.extra == {"crop_ratio": 1.0}
    # the url carries "&t=6s": the YouTube id is parsed from v= only
    assert radio10.mirror_names == ("ZoRK17RCZHY", "Radio10")
    assert (radio10.start_s, radio10.end_s) == (30.0, 170.0)

    assert len([c for c in clips if c.startswith("Radio34_")]) == 10
    assert (clips["Radio34_9"].start_s, clips["Radio34_9"].end_s) == (260.0, 290.0)
    assert not any(c.startswith("Radio24_") for c in clips)  # url but no annotation
    # WDA_video_url.txt starts with a BOM: its first video still parses cleanly
    assert clips["CarolynMaloney2_0"].source_url == "https://www.youtube.com/watch?v=RApGxN-O9Qc"
    # WRA_annotion_time.txt has trailing spaces
    assert [clips[f"AdamKinzinger2_{k}"].end_s for k in range(3)] == [80.0, 160.0, 230.0]
    # crops reaching below the reference height are kept as listed
    assert clips["MaggieHassan_0"].crop.y1 == 776 and clips["MaggieHassan_0"].max_height == 720


def test_hdtf_real_quirks_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datasets_spec.hdtf"):
        records = _by_id(hdtf.prepare())
    messages = "\n".join(caplog.messages)
    assert "WRA_resolution.txt:76: KevinMcCarthy1 has resolution 0" in messages
    assert "WRA_annotion_time.txt:96: spans of MittRomney overlap" in messages
    kevin = records["KevinMcCarthy1_1"]
    assert kevin.crop is None and kevin.max_height is None and kevin.extra == {"crop_ratio": 1.2}
    assert (records["MittRomney_1"].start_s, records["MittRomney_1"].end_s) == (33.0, 533.0)


def _write_hdtf(root: Path, files: dict[str, bytes] | None = None) -> Path:
    """A minimal valid HDTF directory (one video per subset), with ``files`` replacing some lists."""
    for subset in hdtf.SUBSETS:
        name = f"{subset}Video"
        lists = {
            "video_url": f"{name} https://www.youtube.com/watch?v={subset:_<11}\n",
            "resolution": f"{name}.mp4 1080\n",
            "annotion_time": f"{name}.mp4 00:01-00:11\n",
            "crop_wh": f"{name}_0.mp4 10 200 20 200\n",
            "crop_ratio": f"{name}_0.mp4 1.2\n",
        }
        for kind, text in lists.items():
            (root / f"{subset}_{kind}.txt").write_bytes(text.encode())
    for name, data in (files or {}).items():
        (root / name).write_bytes(data)
    return root


def test_hdtf_tolerates_bom_crlf_spaces_blank_lines_and_no_final_newline(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    _write_hdtf(
        tmp_path,
        {
            "RD_video_url.txt": bom
            + b"Anna https://youtu.be/AAAAAAAAAAA\r\n\r\nBob https://www.youtube.com/watch?v=BBBBBBBBBBB&t=6s",
            "RD_resolution.txt": bom + b"Anna.mp4 720  \r\nBob 1080",
            "RD_annotion_time.txt": b"Anna.mp4 00:05-00:15 01:00-1:02:03  \r\n\r\n \r\nBob 00:00-00:10 \r\n",
            "RD_crop_wh.txt": b"Anna_0.mp4 1 2 3 4 \r\nAnna_1 5 6 7 8\r\nBob_0.mp4 9 10 11 12",
            "RD_crop_ratio.txt": bom + b"Anna_0 1.2\r\nAnna_1.mp4 0.9 \r\n",
        },
    )
    clips = _by_id(hdtf.prepare(tmp_path, split="val"))
    assert sorted(clips) == ["Anna_0", "Anna_1", "Bob_0", "WDAVideo_0", "WRAVideo_0"]
    anna0, anna1, bob = clips["Anna_0"], clips["Anna_1"], clips["Bob_0"]
    assert (anna0.start_s, anna0.end_s, anna1.start_s, anna1.end_s) == (5.0, 15.0, 60.0, 3723.0)
    assert anna0.crop == CropSpec(kind="pixels", x0=1, y0=3, x1=3, y1=7, ref_height=720)
    assert anna1.crop == CropSpec(kind="pixels", x0=5, y0=7, x1=11, y1=15, ref_height=720)
    assert anna0.extra == {"crop_ratio": 1.2} and anna1.extra == {"crop_ratio": 0.9} and bob.extra == {}
    assert anna0.mirror_names == ("AAAAAAAAAAA", "Anna")
    assert bob.mirror_names == ("BBBBBBBBBBB", "Bob") and bob.max_height == 1080
    assert anna1.provenance == {"subset": "RD", "file": "RD_annotion_time.txt", "line": 1}
    assert bob.provenance["line"] == 4
    assert {r.split for r in clips.values()} == {"val"}


@pytest.mark.parametrize("span", ["00:30-0x:50", "00:30", "00:70-01:00", "1:60:00-2:00:00", "00:30-00:30"])
def test_hdtf_malformed_span_names_file_and_line(tmp_path: Path, span: str) -> None:
    _write_hdtf(tmp_path, {"WDA_annotion_time.txt": f"\ufeff\nWDAVideo.mp4 00:01-00:11 {span}\n".encode()})
    with pytest.raises(MetadataError, match=rf"WDA_annotion_time\.txt:2: .*{re.escape(span)}"):
        hdtf.prepare(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("RD_crop_wh.txt", b"RDVideo_0.mp4 10 200 20\n", "RD_crop_wh.txt:1"),
        ("RD_crop_wh.txt", b"RDVideo_0.mp4 10 0 20 200\n", "RD_crop_wh.txt:1"),
        ("RD_resolution.txt", b"RDVideo.mp4 high\n", "RD_resolution.txt:1"),
        ("RD_crop_ratio.txt", b"RDVideo_0 x\n", "RD_crop_ratio.txt:1"),
        ("RD_video_url.txt", b"\nRDVideo a\nRDVideo b\n", "RD_video_url.txt:3"),
        ("RD_video_url.txt", b"\xff\xfe", "RD_video_url.txt"),
    ],
)
def test_hdtf_unreadable_lines(tmp_path: Path, name: str, text: bytes, where: str) -> None:
    _write_hdtf(tmp_path, {name: text})
    with pytest.raises(MetadataError, match=re.escape(where)):
        hdtf.prepare(tmp_path)


def test_hdtf_missing_url_is_an_entry_error_and_orphan_crop_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_hdtf(
        tmp_path,
        {
            "RD_annotion_time.txt": b"RDVideo.mp4 00:01-00:11\nNoUrl.mp4 00:01-00:05\n",
            "RD_crop_wh.txt": b"RDVideo_0.mp4 10 200 20 200\nRDVideo_3.mp4 10 200 20 200\n",
        },
    )
    errors: list[MetadataError] = []
    with caplog.at_level(logging.WARNING, logger="datasets_spec.hdtf"):
        clips = _by_id(hdtf.prepare(tmp_path, errors=errors))
    assert "NoUrl_0" not in clips and "RDVideo_3" not in clips and "RDVideo_0" in clips
    assert [(e.entry_id, e.manifest_error()) for e in errors] == [
        ("NoUrl_0", "RD_annotion_time.txt:2: no URL for NoUrl in RD_video_url.txt")
    ]
    assert "RD_crop_wh.txt:2: crop for RDVideo_3, a clip not in RD_annotion_time.txt; ignored" in caplog.messages
    with pytest.raises(MetadataError, match=r"RD_annotion_time\.txt:2: no URL for NoUrl"):
        hdtf.prepare(tmp_path)


def test_hdtf_same_clip_in_two_subsets_is_an_error(tmp_path: Path) -> None:
    _write_hdtf(
        tmp_path,
        {
            "WRA_video_url.txt": b"RDVideo https://www.youtube.com/watch?v=CCCCCCCCCCC\n",
            "WRA_resolution.txt": b"RDVideo 720\n",
            "WRA_annotion_time.txt": b"RDVideo 00:01-00:02\n",
        },
    )
    with pytest.raises(MetadataError, match="'RDVideo_0' appears in subsets RD and WRA"):
        hdtf.prepare(tmp_path)


def test_hdtf_subsets_pick_list_prefixes(tmp_path: Path) -> None:
    _write_hdtf(tmp_path)
    assert [r.clip_id for r in hdtf.prepare(tmp_path, subsets=("WRA",))] == ["WRAVideo_0"]
    for kind in hdtf.LISTS:
        (tmp_path / f"WRA_{kind}.txt").rename(tmp_path / f"OWN_{kind}.txt")
    records = hdtf.prepare(tmp_path, subsets=("OWN",))
    assert [(r.clip_id, r.provenance["subset"], r.provenance["file"]) for r in records] == [
        ("WRAVideo_0", "OWN", "OWN_annotion_time.txt")
    ]
    # by default every <PREFIX>_video_url.txt of the folder is read
    assert hdtf.subsets_in(tmp_path) == ("OWN", "RD", "WDA")
    assert {r.provenance["subset"] for r in hdtf.prepare(tmp_path)} == {"OWN", "RD", "WDA"}


def test_hdtf_missing_list_or_directory(tmp_path: Path) -> None:
    _write_hdtf(tmp_path)
    (tmp_path / "WRA_crop_ratio.txt").unlink()
    with pytest.raises(MetadataError, match=r"WRA_crop_ratio\.txt: missing HDTF list"):
        hdtf.prepare(tmp_path)
    with pytest.raises(MetadataError, match="not a directory"):
        hdtf.prepare(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.youtube.com/watch?v=uBWJJvynXpA&t=6s", "uBWJJvynXpA"),
        ("https://youtube.com/watch?feature=share&v=-F_x9F3kLq0", "-F_x9F3kLq0"),
        ("https://youtu.be/uBWJJvynXpA?t=3", "uBWJJvynXpA"),
        ("https://m.youtube.com/shorts/uBWJJvynXpA", "uBWJJvynXpA"),
        ("https://www.youtube.com/watch?v=short", None),
        ("https://example.com/watch?v=uBWJJvynXpA", None),
        ("not a url", None),
    ],
)
def test_youtube_id(url: str, expected: str | None) -> None:
    assert hdtf.youtube_id(url) == expected


# --------------------------------------------------------------------------- CelebV-HQ

_JSON_GAP = re.compile(r"[\s,:]*")


def _complete_celebvhq(partial: str) -> dict:
    """The meta_info and every complete clip object of a truncated celebvhq_info.json."""
    decoder = json.JSONDecoder()
    meta, _ = decoder.raw_decode(
        partial, partial.index("{", partial.index('"meta_info"') + len('"meta_info"'))
    )
    pos = partial.index("{", partial.index('"clips"')) + 1
    clips = {}
    while True:
        try:
            key, pos = decoder.raw_decode(partial, _JSON_GAP.match(partial, pos).end())
            value, pos = decoder.raw_decode(partial, _JSON_GAP.match(partial, pos).end())
        except json.JSONDecodeError:
            return {"meta_info": meta, "clips": clips}
        clips[key] = value


@pytest.fixture(scope="module")
def celebvhq_info(metadata_dir: Path) -> dict:
    partial = (metadata_dir / "celebvhq" / "celebvhq_info.head9836bytes.json.partial").read_text(
        encoding="utf-8"
    )
    return _complete_celebvhq(partial)


def _write_info(directory: Path, info: dict) -> Path:
    path = directory / celebvhq.INFO_NAME
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


def test_celebvhq_parses_real_clips(tmp_path: Path, celebvhq_info: dict) -> None:
    path = _write_info(tmp_path, celebvhq_info)
    records = celebvhq.prepare(path)
    assert celebvhq.prepare(tmp_path) == records  # a directory holding the file
    assert len(records) == 17
    assert [r.clip_id for r in records] == sorted(celebvhq_info["clips"])
    assert len({r.source_id for r in records}) == 12

    clip = _by_id(records)["M2Ohb0FAaJU_1"]
    assert clip.dataset == "celebvhq" and clip.source_id == "M2Ohb0FAaJU"
    assert clip.source_url == "https://www.youtube.com/watch?v=M2Ohb0FAaJU"
    assert clip.mirror_names == ("M2Ohb0FAaJU",)
    assert (clip.start_s, clip.end_s) == (81.62, 86.17)
    assert clip.crop == CropSpec(
        kind="normalized", x0=0.1964, y0=0.0, x1=0.6922, y1=0.8815, expand=0.02, square=True
    )
    assert clip.expect_audio and clip.max_height is None and clip.split == "train"
    assert clip.provenance == {"file": "celebvhq_info.json", "key": "M2Ohb0FAaJU_1"}
    assert clip.extra == {
        "appearance": [
            "young",
            "rosy_cheeks",
            "oval_face",
            "brown_hair",
            "long_hair",
            "bushy_eyebrows",
            "no_beard",
            "wearing_earrings",
            "wearing_lipstick",
        ],
        "action": ["frown", "nod", "talk", "turn"],
        "emotion": "neutral",
        "version": "v0.1",
    }
    multi = _by_id(records)["_0tf2n3rlJU_0"]  # an id starting with "_", several emotions
    assert multi.source_id == "_0tf2n3rlJU"
    assert [label["emotion"] for label in multi.extra["emotion"]] == ["neutral", "happy"]
    for r in records:
        assert ClipRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration": {"start_sec": 86.17, "end_sec": 86.17}}, "bad duration"),
        ({"duration": {"start_sec": 5, "end_sec": "9"}}, "bad duration"),
        ({"bbox": {"top": 0.0, "bottom": 1.2, "left": 0.1, "right": 0.6}}, "bbox"),
        ({"bbox": {"top": 0.0, "bottom": 0.8, "left": 0.6, "right": 0.1}}, "bbox"),
        ({"ytb_id": None}, "ytb_id"),
        ({"attributes": {"appearance": [1], "action": [], "emotion": {"labels": "happy"}}}, "appearance"),
    ],
)
def test_celebvhq_bad_clip_names_its_key(
    tmp_path: Path, celebvhq_info: dict, change: dict, message: str
) -> None:
    info = json.loads(json.dumps(celebvhq_info))
    info["clips"]["M2Ohb0FAaJU_1"].update(change)
    path = _write_info(tmp_path, info)
    with pytest.raises(MetadataError, match=rf"celebvhq_info\.json: clip 'M2Ohb0FAaJU_1': .*{message}"):
        celebvhq.prepare(path)


def test_celebvhq_unreadable_files(tmp_path: Path, metadata_dir: Path) -> None:
    partial = metadata_dir / "celebvhq" / "celebvhq_info.head9836bytes.json.partial"
    with pytest.raises(MetadataError, match=r"head9836bytes\.json\.partial:1: invalid JSON"):
        celebvhq.prepare(partial)
    with pytest.raises(MetadataError, match="file not found"):
        celebvhq.prepare(tmp_path)
    with pytest.raises(MetadataError, match="download_metadata"):
        celebvhq.prepare(None)
    bad = _write_info(tmp_path, {"clips": {}})
    with pytest.raises(MetadataError, match="meta_info"):
        celebvhq.prepare(bad)


@pytest.fixture()
def loopback() -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """A local HTTP server: (base url, path -> body served, paths requested)."""
    routes: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_metadata_checks_blob_id(tmp_path: Path, celebvhq_info: dict, loopback) -> None:
    base, routes, hits = loopback
    body = json.dumps(celebvhq_info).encode()
    routes["/good.json"] = body
    routes["/tampered.json"] = body.replace(b"81.62", b"81.63")
    dest = tmp_path / "meta"

    path = celebvhq.download_metadata(dest, url=f"{base}/good.json", expected_blob=git_blob_sha1(body))
    assert path == dest / "celebvhq_info.json" and path.read_bytes() == body
    assert [p.name for p in dest.iterdir()] == ["celebvhq_info.json"]
    assert len(celebvhq.prepare(path)) == 17

    # already there with the right id: no request
    again = celebvhq.download_metadata(dest, url=f"{base}/good.json", expected_blob=git_blob_sha1(body))
    assert again == path and hits == ["/good.json"]

    other = tmp_path / "other"
    with pytest.raises(MetadataError, match=r"git blob id .* expected"):
        celebvhq.download_metadata(other, url=f"{base}/tampered.json", expected_blob=git_blob_sha1(body))
    assert not other.exists() or not any(other.iterdir())


def test_download_metadata_default_is_pinned() -> None:
    assert celebvhq.CELEBVHQ_INFO_URL == (
        "https://raw.githubusercontent.com/CelebV-HQ/CelebV-HQ/"
        "d1b6cf3ace513de8c9af3f2b72860ac7533e81ef/celebvhq_info.json"
    )
    assert celebvhq.CELEBVHQ_INFO_BLOB == "93f27ee557668bc0f92bd69be1ca68e34896ad28"


# --------------------------------------------------------------------------- VFHQ


def _vfhq_text(
    ytid: str,
    start: int,
    end: int,
    *,
    height: int = 1080,
    width: int = 1920,
    fps: str = "29.97",
    crop: str | None = "CROP 700 120 1180 600",
    newline: str = "\n",
) -> str:
    """A meta-info file laid out exactly as FORMAT.md describes."""
    lines = [
        f"Video {ytid}",
        f"H {height}",
        f"W {width}",
        f"FPS {fps}",
        "",
        "FRAME INDEX X0 Y0 W H [Landmarks (5 Points)]",
        "",
    ]
    for frame in range(start + 1, end):
        x, y = 812 + frame % 7, 204 + frame % 5
        landmarks = " ".join(
            f"{v:.2f}"
            for v in (
                x + 90.31,
                y + 148.1,
                x + 201.52,
                y + 145.87,
                x + 148.04,
                y + 207.26,
                x + 103.66,
                y + 276.93,
                x + 192.27,
                y + 274.4,
            )
        )
        lines.append(f"{frame:08d} 0 {x} {y} 298 371 {landmarks}")
    if crop is not None:
        lines.append(crop)
    return newline.join(lines) + newline


def _write_vfhq(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_vfhq_parses_every_field(tmp_path: Path) -> None:
    _write_vfhq(
        tmp_path / "train", "Clip+-F_x9F3kLq0+P2+C1+F100-260.txt", _vfhq_text("-F_x9F3kLq0", 100, 260)
    )
    _write_vfhq(
        tmp_path / "train" / "deeper",
        "Clip+G0DGRma_p48+P0+C0+F11208-11383.txt",
        _vfhq_text(
            "G0DGRma_p48",
            11208,
            11383,
            height=720,
            width=1280,
            fps="25.0",
            crop="CROP 400 80 720 400",
            newline="\r\n",
        ),
    )
    (tmp_path / "train" / "README.txt").write_text("not a clip file")
    records = vfhq.prepare(tmp_path, split="test")
    assert [r.clip_id for r in records] == ["-F_x9F3kLq0_P2_C1_F100-260", "G0DGRma_p48_P0_C0_F11208-11383"]
    first, second = records
    assert first == ClipRecord(
        dataset="vfhq",
        clip_id="-F_x9F3kLq0_P2_C1_F100-260",
        source_id="-F_x9F3kLq0",
        source_url="https://www.youtube.com/watch?v=-F_x9F3kLq0",
        mirror_names=("-F_x9F3kLq0",),
        start_frame=101,
        end_frame=260,
        source_fps=29.97,
        crop=CropSpec(kind="pixels", x0=700, y0=120, x1=1180, y1=600, ref_width=1920, ref_height=1080),
        expect_audio=False,
        max_height=1080,
        split="test",
        provenance={"file": "Clip+-F_x9F3kLq0+P2+C1+F100-260.txt"},
        extra={"person": 2, "clip_index": 1},
    )
    assert (second.start_frame, second.end_frame, second.source_fps, second.max_height) == (
        11209,
        11383,
        25.0,
        720,
    )
    assert second.crop == CropSpec(
        kind="pixels", x0=400, y0=80, x1=720, y1=400, ref_width=1280, ref_height=720
    )
    assert second.time_span() == pytest.approx((11209 / 25, 11383 / 25))
    # a single file works too
    assert vfhq.prepare(tmp_path / "train" / "Clip+-F_x9F3kLq0+P2+C1+F100-260.txt", split="test") == [first]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("Clip+abcdefghijk+P0+C0+F10-50.txt", _vfhq_text("abcdefghijk", 10, 50, crop=None), "CROP"),
        ("Clip+abcdefghijk+P0+F10-50.txt", _vfhq_text("abcdefghijk", 10, 50), "file name"),
        ("Clip+abc+defghijk+P0+C0+F10-50.txt", _vfhq_text("abc+defghijk", 10, 50), "file name"),
        ("Clip+abcdefghijk+P0+C0+F10-11.txt", _vfhq_text("abcdefghijk", 10, 11), "keeps no frame"),
        ("Clip+abcdefghijk+P0+C0+F10-50.txt", _vfhq_text("zzzzzzzzzzz", 10, 50), "Video line"),
        ("Clip+abcdefghijk+P0+C0+F10-50.txt", _vfhq_text("abcdefghijk", 10, 50, fps="nan"), "FPS"),
        ("Clip+abcdefghijk+P0+C0+F10-50.txt", _vfhq_text("abcdefghijk", 10, 50, height=0), "H '0'"),
        (
            "Clip+abcdefghijk+P0+C0+F10-50.txt",
            _vfhq_text("abcdefghijk", 10, 50, crop="CROP 5 5 5 9"),
            "CROP box",
        ),
        ("Clip+abcdefghijk+P0+C0+F10-50.txt", _vfhq_text("abcdefghijk", 10, 50).replace("W 1920\n", ""), "W"),
    ],
)
def test_vfhq_malformed_file_names_the_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = _write_vfhq(tmp_path, name, text)
    with pytest.raises(MetadataError, match=re.escape(message)) as info:
        vfhq.prepare(tmp_path)
    assert str(path) in str(info.value)


def test_vfhq_duplicates_and_empty_inputs(tmp_path: Path) -> None:
    name = "Clip+abcdefghijk+P0+C0+F10-50.txt"
    _write_vfhq(tmp_path / "a", name, _vfhq_text("abcdefghijk", 10, 50))
    _write_vfhq(tmp_path / "b", name, _vfhq_text("abcdefghijk", 10, 50))
    with pytest.raises(MetadataError, match="described twice"):
        vfhq.prepare(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetadataError, match="no Clip"):
        vfhq.prepare(tmp_path / "empty")
    with pytest.raises(MetadataError, match="not shipped"):
        vfhq.prepare(None)
