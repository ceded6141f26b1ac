"""The bad-media corpus (tests/bad_media.py) really has the defect each entry claims."""

from __future__ import annotations

import json
import re
import subprocess
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import bad_media as bm
from bad_media import CORPUS, make_corpus


def probe(path: Path, *extra: str) -> dict[str, Any] | None:
    """ffprobe JSON (streams + format), or None when ffprobe cannot read the file."""
    res = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams",
                          "-show_format", *extra, str(path)], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else None


def decode_errors(path: Path, *extra: str) -> tuple[int, str]:
    """Decode fully with ``ffmpeg -v error``; return (exit code, stderr)."""
    res = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), *extra,
                          "-f", "null", "-"], capture_output=True, text=True)
    return res.returncode, res.stderr


def kinds(info: dict[str, Any]) -> list[str]:
    return [s["codec_type"] for s in info["streams"]]


def video(info: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in info["streams"] if s["codec_type"] == "video")


@pytest.mark.slow
def test_bad_media_corpus(media_dir: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    files = make_corpus(media_dir, tmp_path / "mirror")
    print(f"make_corpus: {len(files)} files in {time.perf_counter() - start:.1f} s")

    assert list(files) == list(CORPUS)
    for name, path in files.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", name), name
        assert path.is_file() and path.stem == name and path.parent == tmp_path / "mirror"
    info = {name: probe(path) for name, path in files.items()}

    assert files[bm.ZERO_BYTES].stat().st_size == 0
    for name in (bm.ZERO_BYTES, bm.MOOV_END_CUT, bm.NOT_A_VIDEO):
        assert info[name] is None, f"{name} should be unreadable"

    # the control and the odd-but-valid files decode without a single error line
    for name in (bm.GOOD_TALKING, bm.ODD_SIZE, bm.VP9_WEBM, bm.HEVC_PORTRAIT, bm.ROTATED):
        assert decode_errors(files[name]) == (0, ""), name
    good = video(info[bm.GOOD_TALKING])
    assert kinds(info[bm.GOOD_TALKING]) == ["video", "audio"]
    assert (good["width"], good["height"], good["nb_frames"]) == (512, 512, "90")

    # truncated: moov promises 3 s at 30 fps, far fewer frames are actually there
    truncated = probe(files[bm.TRUNCATED], "-count_frames", "-select_streams", "v:0")
    v = truncated["streams"][0]
    nominal = float(truncated["format"]["duration"]) * float(Fraction(v["avg_frame_rate"]))
    assert nominal == pytest.approx(90, abs=1)
    assert 0 < int(v["nb_read_frames"]) < 0.7 * nominal

    # corrupt_mid: container fine, decoder complains but ffmpeg still exits 0
    assert video(info[bm.CORRUPT_MID])["nb_frames"] == "90"
    rc, err = decode_errors(files[bm.CORRUPT_MID])
    assert rc == 0
    assert len(re.findall(r"^\[h264 @", err, re.M)) >= 10, err

    assert kinds(info[bm.AUDIO_ONLY]) == ["audio"]

    vfr = video(info[bm.VFR])
    assert vfr["r_frame_rate"] != vfr["avg_frame_rate"]
    pts = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts", "-of", "csv=p=0", str(files[bm.VFR])],
                         capture_output=True, text=True, check=True).stdout.split()
    ticks = sorted(map(int, pts))
    steps = {b - a for a, b in zip(ticks, ticks[1:])}
    assert len(steps) >= 2, steps

    rot = video(info[bm.ROTATED])
    assert (rot["width"], rot["height"]) == (512, 384)
    assert [d.get("rotation") for d in rot["side_data_list"]] == [-90]

    odd = video(info[bm.ODD_SIZE])
    assert (odd["codec_name"], odd["width"], odd["height"]) == ("h264", 513, 317)

    assert [s["codec_name"] for s in info[bm.VP9_WEBM]["streams"]] == ["vp9", "opus"]
    assert info[bm.VP9_WEBM]["format"]["format_name"].startswith("matroska,webm")

    uhd = video(info[bm.UHD_4K])
    assert (uhd["width"], uhd["height"]) == (3840, 2160)

    three = probe(files[bm.THREE_FRAMES], "-count_packets", "-select_streams", "v:0")
    assert three["streams"][0]["nb_read_packets"] == "3"
    assert kinds(info[bm.THREE_FRAMES]) == ["video", "audio"]

    for name, seconds in ((bm.TWO_FACES, 3), (bm.FACE_LEAVES, 4), (bm.SILENT_AUDIO, 3)):
        assert kinds(info[name]) == ["video", "audio"], name
        assert (video(info[name])["width"], video(info[name])["height"]) == (512, 512)
        assert float(info[name]["format"]["duration"]) == pytest.approx(seconds, abs=0.1)
    assert kinds(info[bm.NO_AUDIO]) == ["video"]
    loudness = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(files[bm.SILENT_AUDIO]), "-map", "0:a",
         "-af", "volumedetect", "-f", "null", "-"], capture_output=True, text=True).stderr
    assert "max_volume: -91.0 dB" in loudness  # volumedetect's floor: all samples are zero

    hevc = video(info[bm.HEVC_PORTRAIT])
    assert (hevc["codec_name"], hevc["width"], hevc["height"]) == ("hevc", 1080, 1920)
    assert float(info[bm.HEVC_PORTRAIT]["format"]["duration"]) == pytest.approx(3, abs=0.2)
