"""Every input gets exactly one verdict (issue 15): real bad media and malformed metadata in
all three formats, built with real ffmpeg, MediaPipe, Ray and webdataset.

The corpus (``bad_media.py``) is made from ``../shared`` media; the metadata names its
files as YouTube ids, and ``--mirror`` holds them. Each build's manifest must have one row
per entry with the expected status and reason, the good clips must be ``ok``, and the
CLI must exit 3 and write nothing outside its output, work and temp folders.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from bad_media import (AUDIO_ONLY, CORRUPT_MID, FACE_LEAVES, GOOD_TALKING, HEVC_PORTRAIT, MOOV_END_CUT, NO_AUDIO,
                       NOT_A_VIDEO, ODD_SIZE, ROTATED, SILENT_AUDIO, THREE_FRAMES, TRUNCATED, TWO_FACES, UHD_4K, VFR,
                       VP9_WEBM, ZERO_BYTES, make_corpus)
from rich.console import Console

from aniportrait.ids import safe_id
from aniportrait.media.cut import CutSettings
from pipelines.build.run import run_build
from pipelines.build.config import BuildConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SIZE = 256
EXIT_USAGE, EXIT_PARTIAL = 2, 3
OK, FAILED, FILTERED = "ok", "failed", "filtered"
BAD = (FAILED, "bad_metadata")


def _url(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


@pytest.fixture(scope="module")
def mirror(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mirror")
    make_corpus(media_dir, folder)
    return folder


def _rows(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    ids = [r["clip_id"] for r in rows]
    assert len(ids) == len(set(ids)), "one row per clip id"
    return {r["clip_id"]: r for r in rows}


def _check_verdicts(rows: dict[str, dict], named: dict[str, tuple[str, str | None]],
                    unnamed: list[tuple[str, str]]) -> None:
    """Rows of ``named`` ids have (status, reason); the other rows are exactly ``unnamed``
    (entries without a derivable id get one from their file and line); every row that is
    not ok says why in words."""
    verdicts = {cid: (r["status"], r["reason"]) for cid, r in rows.items()}
    assert {cid: verdicts.get(cid) for cid in named} == named
    assert sorted(v for cid, v in verdicts.items() if cid not in named) == sorted(unnamed)
    for row in rows.values():
        assert (row["status"] == OK) == (row["error"] is None), row
        if row["status"] != OK:
            assert len(row["error"]) > 15 and row["failed_stage"], row
            assert " @ 0x" not in row["error"] and os.sep + "tmp" not in row["error"], "machine-specific text"


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------- HDTF

HDTF_URLS = {GOOD_TALKING: GOOD_TALKING, "BadUrl": GOOD_TALKING, "Ünïcode": VP9_WEBM, "../../x": VFR, "a;rm": ROTATED,
             **{v: v for v in (ZERO_BYTES, TRUNCATED, CORRUPT_MID, MOOV_END_CUT, NOT_A_VIDEO, AUDIO_ONLY, ODD_SIZE,
                               UHD_4K, TWO_FACES, FACE_LEAVES, SILENT_AUDIO, NO_AUDIO, HEVC_PORTRAIT)}}
HDTF_SPANS = {
    GOOD_TALKING: "00:00-00:02 0x:10-00:02 00:02-00:01 00:01-00:01 00:00-00:09 00:05-00:06",
    "BadUrl": "00:00-00:02", "Ünïcode": "00:00-00:02", "../../x": "00:00-00:02", "a;rm": "00:00-00:02",
    ZERO_BYTES: "00:00-00:02", TRUNCATED: "00:00-00:03", CORRUPT_MID: "00:00-00:03", MOOV_END_CUT: "00:00-00:02",
    NOT_A_VIDEO: "00:00-00:02", AUDIO_ONLY: "00:00-00:02", ODD_SIZE: "00:00-00:02", UHD_4K: "00:00-00:01",
    TWO_FACES: "00:00-00:03", FACE_LEAVES: "00:00-00:04", SILENT_AUDIO: "00:00-00:03", NO_AUDIO: "00:00-00:03",
    HEVC_PORTRAIT: "00:00-00:03",
}
HDTF_EXPECTED = {
    f"{GOOD_TALKING}_0": (OK, None),
    f"{GOOD_TALKING}_1": BAD,  # malformed time 0x:10
    f"{GOOD_TALKING}_2": BAD,  # reversed
    f"{GOOD_TALKING}_3": BAD,  # empty
    f"{GOOD_TALKING}_4": (FAILED, "span_out_of_range"),  # ends 6 s past the 3 s source
    f"{GOOD_TALKING}_5": (FAILED, "span_out_of_range"),  # starts after its end
    "BadUrl_0": BAD,  # three values on its URL line
    safe_id("Ünïcode_0"): (OK, None),
    safe_id("../../x_0"): (OK, None),  # VFR source
    safe_id("a;rm_0"): (OK, None),  # rotated source
    "NoUrl_0": BAD,
    f"{ZERO_BYTES}_0": (FAILED, "unreadable_source"),
    f"{TRUNCATED}_0": (FAILED, "corrupt_source"),
    f"{CORRUPT_MID}_0": (FAILED, "corrupt_source"),
    f"{MOOV_END_CUT}_0": (FAILED, "unreadable_source"),
    f"{NOT_A_VIDEO}_0": (FAILED, "unreadable_source"),
    f"{AUDIO_ONLY}_0": (FAILED, "no_video_stream"),
    f"{ODD_SIZE}_0": (OK, None),
    f"{UHD_4K}_0": (OK, None),
    f"{TWO_FACES}_0": (FILTERED, "multiple_faces"),
    f"{FACE_LEAVES}_0": (FAILED, "low_face_rate"),
    f"{SILENT_AUDIO}_0": (OK, None),
    f"{NO_AUDIO}_0": (OK, None),  # no crop line either: the whole frame
    f"{HEVC_PORTRAIT}_0": (OK, None),
    "Own_0": BAD,  # subset XX lacks XX_crop_wh.txt
    "Spaced_0": BAD,  # "Spaced Name 00:00-00:02": video "Spaced" (no URL), spans "Name" and 00:00-00:02
    "Spaced_1": BAD,
}
#: Entries whose clip id is taken by an earlier entry get ids from file name and line.
HDTF_UNNAMED = [BAD]  # the repeated odd-size line


def _write_hdtf(folder: Path) -> Path:
    folder.mkdir()
    names = list(HDTF_URLS)
    (folder / "RD_video_url.txt").write_text(
        "".join(f"{n} {_url(v)}{' extra' if n == 'BadUrl' else ''}\n" for n, v in HDTF_URLS.items()))
    (folder / "RD_resolution.txt").write_text(
        "".join(f"{n} {1920 if n == HEVC_PORTRAIT else 512}\n" for n in names))
    (folder / "RD_annotion_time.txt").write_text(
        "\ufeff" + "".join(f"{n}.mp4 {spans}\n" for n, spans in HDTF_SPANS.items())
        + f"NoUrl 00:00-00:02\nSpaced Name 00:00-00:02\n{ODD_SIZE} 00:00-00:01\n")
    (folder / "RD_crop_wh.txt").write_text(f"{GOOD_TALKING}_0 0 512 0 512\n{HEVC_PORTRAIT}_0.mp4 300 600 430 600\n")
    (folder / "RD_crop_ratio.txt").write_text("")
    (folder / "XX_video_url.txt").write_text(f"Own {_url(GOOD_TALKING)}\n")
    (folder / "XX_resolution.txt").write_text("Own 512\n")
    (folder / "XX_annotion_time.txt").write_text("Own 00:00-00:02\n")
    (folder / "XX_crop_ratio.txt").write_text("")
    return folder


def test_hdtf_every_entry_gets_one_verdict_and_nothing_escapes(mirror: Path, tmp_path: Path) -> None:
    """The CLI in its own process, HOME and cwd fresh folders that must stay empty."""
    metadata = _write_hdtf(tmp_path / "hdtf")
    home, cwd, out = tmp_path / "home", tmp_path / "cwd", tmp_path / "out"
    home.mkdir()
    cwd.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "build", "--dataset", "hdtf", "--metadata", str(metadata), "--mirror",
         str(mirror), "--out", str(out), "--size", str(SIZE), "--wav2vec2", "none", "--workers", "2"],
        cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HOME": str(home), "PYTHONPATH": str(REPO)})
    assert done.returncode == EXIT_PARTIAL, done.stderr[-3000:]
    # Ray's own state is allowed: a local Ray saves its cluster auth token in ~/.ray/auth_token.
    assert set(_tree(home)) <= {".ray", ".ray/auth_token"} and _tree(cwd) == [], "the build wrote outside its folders"
    assert "metadata entries could not be read" in " ".join(done.stderr.split())
    rows = _rows(out)
    _check_verdicts(rows, HDTF_EXPECTED, HDTF_UNNAMED)
    assert "0x:10" in rows[f"{GOOD_TALKING}_1"]["error"] and "RD_annotion_time.txt:1" in rows[f"{GOOD_TALKING}_1"]["error"]
    assert rows[f"{GOOD_TALKING}_1"]["failed_stage"] == "metadata"
    assert "ends 6.000 s past the end of the 3.000 s source" in rows[f"{GOOD_TALKING}_4"]["error"]
    assert "starts after the end of the 3.000 s source" in rows[f"{GOOD_TALKING}_5"]["error"]
    assert "XX_crop_wh.txt" in rows["Own_0"]["error"]
    corrupt = rows[f"{CORRUPT_MID}_0"]["error"]
    assert "hit errors" in corrupt and "expected frames" in corrupt and "0x" not in corrupt
    assert "of 90 expected frames" in rows[f"{TRUNCATED}_0"]["error"]
    assert "face found in" in rows[f"{FACE_LEAVES}_0"]["error"]
    two = rows[f"{TWO_FACES}_0"]
    assert two["error"] == "filtered:multiple_faces" and two["faces_max"] >= 2 and two["second_face_rate"] > 0.5
    good = rows[f"{GOOD_TALKING}_0"]
    assert good["frames"] == 60 and good["faces_max"] == 1 and good["second_face_rate"] == 0
    assert good["track_jumps"] == 0
    assert rows[f"{NO_AUDIO}_0"]["audio_note"] == "source has no audio stream"
    shards = sorted(out.glob("hdtf-train-*.tar"))
    keys = {s["__key__"] for s in wds.WebDataset([str(p) for p in shards], shardshuffle=False)}
    assert keys == {cid for cid, r in rows.items() if r["status"] == OK}
    release = json.loads((out / "release.json").read_text())
    assert release["counts"]["failed"] == sum(r["status"] == FAILED for r in rows.values())
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())

    stats = subprocess.run([sys.executable, "-m", "cli", "stats", str(out)], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert stats.returncode == 0, stats.stderr
    assert "bad_metadata" in stats.stderr and "span_out_of_range" in stats.stderr


def test_strict_metadata_stops_at_the_first_malformed_entry(tmp_path: Path) -> None:
    metadata = _write_hdtf(tmp_path / "hdtf")
    done = subprocess.run(
        [sys.executable, "-m", "cli", "build", "--dataset", "hdtf", "--metadata", str(metadata), "--strict-metadata",
         "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "RD_annotion_time.txt:1" in " ".join(done.stderr.split()) and "0x:10" in done.stderr
    assert not (tmp_path / "out" / "manifest.parquet").exists()


# --------------------------------------------------------------------------- CelebV-HQ

def _celebvhq_clip(video: str, start: float, end: float, **changes: object) -> dict:
    clip = {"ytb_id": video, "duration": {"start_sec": start, "end_sec": end},
            "bbox": {"top": 0.0, "bottom": 1.0, "left": 0.0, "right": 1.0},
            "attributes": {"appearance": [0, 1], "action": [1], "emotion": {"labels": "neutral"}}, "version": "v0.1"}
    return {**clip, **changes}


CELEBVHQ_CLIPS = {
    "good_0": _celebvhq_clip(GOOD_TALKING, 0.5, 2.5),
    "webm_0": _celebvhq_clip(VP9_WEBM, 0.0, 2.0),
    "three_0": _celebvhq_clip(THREE_FRAMES, 0.0, 0.1),
    "long_0": _celebvhq_clip(GOOD_TALKING, 1.0, 10.0),
    "badbox_0": _celebvhq_clip(GOOD_TALKING, 0.0, 1.0, bbox={"top": 0.1, "bottom": 0.9, "left": -0.2, "right": 1.2}),
    "baddur_0": _celebvhq_clip(GOOD_TALKING, 2.0, 1.0),
    "nodur_0": _celebvhq_clip(GOOD_TALKING, 0.0, 1.0, duration={"start_sec": "0", "end_sec": True}),
    "noytb_0": _celebvhq_clip("", 0.0, 1.0),
    "notobj_0": "not a clip",
}
CELEBVHQ_EXPECTED = {
    "good_0": (OK, None), "webm_0": (OK, None), "three_0": (FILTERED, "too_short"),
    "long_0": (FAILED, "span_out_of_range"), "badbox_0": BAD, "baddur_0": BAD, "nodur_0": BAD, "noytb_0": BAD,
    "notobj_0": BAD,
}


def _write_celebvhq(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = {"meta_info": {"appearance_mapping": ["young", "smiling"], "action_mapping": ["talk"]},
            "clips": CELEBVHQ_CLIPS}
    path = folder / "celebvhq_info.json"
    path.write_text(json.dumps(info, ensure_ascii=False, indent=1))
    return path


def _build(out: Path, dataset: str, metadata: Path, mirror: Path, workers: int = 2):
    cfg = BuildConfig(dataset=dataset, out=str(out), work_dir=str(out / "_work"), metadata=str(metadata),
                      mirror=str(mirror), workers=workers, cut=CutSettings(size=SIZE))
    return run_build(cfg, Console(file=io.StringIO()))


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_celebvhq_verdicts_are_reproducible_through_a_sigkill(
        local_ray: None, mirror: Path, tmp_path: Path) -> None:
    metadata = _write_celebvhq(tmp_path / "meta")
    first = _build(tmp_path / "a", "celebvhq", metadata, mirror)
    rows = _rows(tmp_path / "a")
    _check_verdicts(rows, CELEBVHQ_EXPECTED, [])
    assert first.failed == 6
    assert rows["three_0"]["frames"] == 3 and rows["three_0"]["error"] == "filtered:too_short"
    assert "celebvhq_info.json" in rows["badbox_0"]["error"] and "badbox_0" in rows["badbox_0"]["error"]
    assert json.loads(rows["badbox_0"]["provenance"]) == {"file": "celebvhq_info.json", "key": "badbox_0"}
    assert rows["badbox_0"]["span_start_s"] is None and rows["noytb_0"]["source_id"]

    # Another process, one worker, killed with SIGKILL once a clip finished its first stage,
    # then run again: nothing released before, no finished clip redone, the same bytes.
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cli", "build", "--dataset", "celebvhq", "--metadata", str(metadata), "--mirror",
            str(mirror), "--out", str(out), "--size", str(SIZE), "--wav2vec2", "none", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    markers = out / "_work" / "clips"
    deadline = time.monotonic() + 240
    while not list(markers.glob("*/clip.done.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in markers.glob("*/clip.done.json")}
    assert 0 < len(done_before) < 4, "the kill must land mid-build"
    assert not (out / "release.json").exists()
    resumed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == EXIT_PARTIAL, resumed.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before, "finished clips were redone"
    assert _outputs(out) == _outputs(tmp_path / "a")
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


# --------------------------------------------------------------------------- VFHQ

def _vfhq_file(folder: Path, name: str, height: int = 512, width: int = 512, fps: str = "30",
               crop: str | None = "CROP 0 0 512 512") -> None:
    video = name.split("+")[1]
    rows = "".join(f"{i:08d} {i} 100 100 300 300 " + " ".join(["200.0"] * 10) + "\n" for i in range(3))
    text = f"Video {video}\nH {height}\nW {width}\nFPS {fps}\n\nFRAME INDEX X0 Y0 W H [Landmarks (5 Points)]\n\n{rows}"
    (folder / name).write_text(text + (f"{crop}\n" if crop else ""))


def test_vfhq_every_meta_file_gets_one_verdict(local_ray: None, mirror: Path, tmp_path: Path) -> None:
    folder = tmp_path / "meta_info"
    folder.mkdir()
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P0+C0+F0-62.txt")
    _vfhq_file(folder, f"Clip+{UHD_4K}+P0+C0+F0-40.txt", height=2160, width=3840, crop="CROP 840 0 3000 2160")
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P1+C0+F0-400.txt")
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P2+C0+F300-200.txt")
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P3+C0+F0-60.txt", crop=None)
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P4+Cx+F0-60.txt")
    _vfhq_file(folder, f"Clip+{GOOD_TALKING}+P5+C0+F0-60.txt", fps="abc")
    result = _build(tmp_path / "out", "vfhq", folder, mirror)
    rows = _rows(tmp_path / "out")
    _check_verdicts(rows, {
        f"{GOOD_TALKING}_P0_C0_F0-62": (OK, None),
        f"{UHD_4K}_P0_C0_F0-40": (OK, None),
        f"{GOOD_TALKING}_P1_C0_F0-400": (FAILED, "span_out_of_range"),
        f"{GOOD_TALKING}_P2_C0_F300-200": BAD,
        f"{GOOD_TALKING}_P3_C0_F0-60": BAD,
        f"{GOOD_TALKING}_P5_C0_F0-60": BAD,
    }, [BAD])  # the file name that cannot be parsed gets an id from the name
    assert result.failed == 5
    assert rows[f"{GOOD_TALKING}_P0_C0_F0-62"]["frames"] == 61 and not rows[f"{GOOD_TALKING}_P0_C0_F0-62"]["has_audio"]
    assert "CROP" in rows[f"{GOOD_TALKING}_P3_C0_F0-60"]["error"]
