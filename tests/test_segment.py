"""Automatic clips of whole videos (``aniportrait.segment``): real scans of real media, and the plan's rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aniportrait.face import DEFAULT_MODEL
from aniportrait.media.probe import MediaError
from aniportrait.segment import (ENERGY_WINDOW_S, SCAN_FPS, Segment, SegmentSettings, SourceScan, decoded_end, plan_segments,
                                 scan_source, undecoded_tail)
import bad_media
import folder_media

STEP = 1 / SCAN_FPS


@pytest.fixture(scope="module")
def made(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("segment_media")
    return {"two_speakers": folder_media.two_speakers(media_dir, folder / "two.mp4"),
            "face_gap": folder_media.face_gap(media_dir, folder / "gap.mov"),
            "joined": folder_media.joined(media_dir, folder / "joined.mkv")}


def _plan(path: Path, **settings: float) -> tuple[SourceScan, list[Segment]]:
    chosen = SegmentSettings(**settings)
    scan = scan_source(path, DEFAULT_MODEL, chosen)
    return scan, plan_segments(scan, chosen)


def _assert_face_centred(segment: Segment, scan: SourceScan, inside: bool = True) -> None:
    """Square, inside the frame (unless not ``inside``: padded), and its centre within 10% of
    the median face centre of the span."""
    x0, y0, x1, y1 = segment.box
    assert x1 - x0 == y1 - y0 > 0
    assert not inside or (x0 >= 0 and y0 >= 0 and x1 <= scan.width and y1 <= scan.height)
    faces = [f for f in scan.faces if segment.start_s <= f[0] * STEP < segment.end_s]
    cx = sorted((f[1] + f[3]) / 2 for f in faces)[len(faces) // 2]
    cy = sorted((f[2] + f[4]) / 2 for f in faces)[len(faces) // 2]
    assert abs((x0 + x1) / 2 - cx) <= 0.1 * (x1 - x0) and abs((y0 + y1) / 2 - cy) <= 0.1 * (x1 - x0)


def test_two_speakers_joined_are_cut_at_the_join(made: dict[str, Path]) -> None:
    scan, segments = _plan(made["two_speakers"])
    assert scan.scene_cuts == [40]
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 4.0 - STEP), (4.0 + STEP, 9.0 - STEP)]
    assert [(s.starts_at, s.ends_at) for s in segments] == [("start", "scene_cut"), ("scene_cut", "end")]
    for segment in segments:
        _assert_face_centred(segment, scan)
    assert segments[0].box != segments[1].box


def test_a_second_without_face_cuts_around_the_gap(made: dict[str, Path]) -> None:
    scan, segments = _plan(made["face_gap"])
    assert not any(3.0 <= f[0] * STEP < 4.0 for f in scan.faces)
    spans = [(s.start_s, s.end_s) for s in segments]
    assert len(spans) == 2 and spans[0][0] == 0.0 and 2.8 <= spans[0][1] <= 3.0
    assert 4.0 <= spans[1][0] <= 4.2 and spans[1][1] == pytest.approx(7.7 - STEP, abs=STEP)


def test_long_video_is_split_below_the_maximum_at_quiet_points(made: dict[str, Path]) -> None:
    scan, segments = _plan(made["joined"], max_clip_s=4.0)
    spans = [(s.start_s, s.end_s) for s in segments]
    assert len(spans) >= 4 and spans[0][0] == 0.0 and spans[-1][1] >= 15.3
    assert all(2.0 <= end - start <= 4.0 for start, end in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # one shot: nothing lost between pieces
    for (_, cut), segment in zip(spans, segments[:-1]):  # each cut is the quietest moment of its window
        assert segment.ends_at == "max_clip"
        window = scan.energy[round((cut - 0.5) / 0.05): round((cut + 0.5) / 0.05)]
        assert scan.energy[round(cut / 0.05)] <= sorted(window)[len(window) // 2]


def test_phone_video_gives_one_face_centred_clip(media_dir: Path) -> None:
    scan, segments = _plan(media_dir / "raw_seated_1080x1920_hevc.mp4")
    assert (scan.width, scan.height) == (1080, 1920) and len(scan.faces) == 50
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 9.9)]
    _assert_face_centred(segments[0], scan)
    x0, _, x1, _ = segments[0].box
    assert 300 <= x1 - x0 <= 600  # 1.5 x a face of ~260 px, not the whole frame


def test_a_video_stored_turned_is_scanned_upright(media_dir: Path, tmp_path: Path) -> None:
    """A phone's portrait video stored landscape with a rotation matrix: scanned as displayed
    (384x512, as the clip stage's ffmpeg sees it), the face found on every sampled frame."""
    turned = tmp_path / "turned.mp4"
    bad_media.rotated(media_dir, turned)
    scan, segments = _plan(turned)
    assert (scan.width, scan.height) == (384, 512) and len(scan.faces) == 15
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 2.9)]
    _assert_face_centred(segments[0], scan, inside=False)  # 1.5 x this close face passes the frame's edges


def test_a_video_cut_short_gives_its_decodable_part_and_the_undecoded_end(media_dir: Path, tmp_path: Path) -> None:
    """Half the bytes of a faststart file: it still declares 7.77 s, decodes to about half; its
    clip stops a scan frame before the earliest end of its streams (the last packets are broken)."""
    short = folder_media.cut_short(media_dir / "talking_lyl_7s.mp4", tmp_path / "short.mp4", 0.5)
    scan, segments = _plan(short)
    assert scan.duration_s == pytest.approx(7.767, abs=0.01) and 3.0 <= scan.decoded_s <= 4.5
    assert scan.decoded_s <= scan.frames * STEP and scan.decoded_s <= len(scan.energy) * ENERGY_WINDOW_S
    [segment] = segments
    assert segment.start_s == 0.0 and scan.decoded_s - 2 * STEP <= segment.end_s <= scan.decoded_s - STEP
    assert undecoded_tail(scan) == (scan.decoded_s, scan.duration_s)


def test_decoded_end_allows_a_second_of_slack_per_stream() -> None:
    assert decoded_end(50, None, 5.0, None) is None
    assert decoded_end(40, None, 5.0, None) is None  # 1.0 s short: a container's slack
    assert decoded_end(39, None, 5.0, None) == 3.9
    assert decoded_end(50, [1] * 80, 5.0, 5.0) is None
    assert decoded_end(45, [1] * 78, 5.0, 5.0) == 3.9  # the audio stops early: the earliest end
    assert decoded_end(39, [1] * 100, 5.0, 5.0) == 3.9
    assert decoded_end(50, [1] * 40, 5.0, None) is None  # no declared audio length (Matroska): video only


def test_the_plan_stops_where_decoding_stops() -> None:
    scan = dataclasses.replace(_scan(8.0, list(range(0, 80, 2))), decoded_s=5.0)
    assert [(s.start_s, s.end_s, s.ends_at) for s in plan_segments(scan, SegmentSettings())] == [(0.0, 4.9, "end")]
    assert undecoded_tail(scan) == (5.0, 8.0)
    assert undecoded_tail(_scan(8.0, [])) is None


def test_unreadable_file_raises_with_its_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(MediaError) as caught:
        scan_source(broken, DEFAULT_MODEL, SegmentSettings())
    assert caught.value.reason == "unreadable_source"


def _scan(seconds: float, faces: list[int], cuts: list[int] = (), energy: list[int] | None = None) -> SourceScan:
    """A scan of ``seconds`` with a 100 px face at the centre of a 640x480 frame on the frames ``faces``."""
    return SourceScan(640, 480, seconds, round(seconds * SCAN_FPS), list(cuts),
                      [[k, 270, 190, 370, 290] for k in faces], energy)


def test_plan_drops_short_stretches_and_bridges_short_gaps() -> None:
    every = list(range(0, 100, 2))
    bridged = [k for k in every if k not in (50, 52)]  # 0.4 s without face: bridged
    assert [(s.start_s, s.end_s) for s in plan_segments(_scan(10.0, bridged), SegmentSettings())] == [(0.0, 9.9)]
    lost = [k for k in every if not 40 <= k < 50]  # no face from 4.0 to 5.0 s
    spans = [(s.start_s, s.end_s) for s in plan_segments(_scan(10.0, lost), SegmentSettings())]
    assert spans == [(0.0, 3.9), (5.0, 9.9)]
    assert [(s.start_s, s.end_s) for s in plan_segments(_scan(10.0, lost), SegmentSettings(min_clip_s=4.5))] == [
        (5.0, 9.9)]
    assert plan_segments(_scan(10.0, []), SegmentSettings()) == []


def test_plan_crop_rules() -> None:
    scan = _scan(10.0, list(range(0, 100, 2)))
    assert plan_segments(scan, SegmentSettings())[0].box == [245, 165, 395, 315]  # 1.5 x 100 px, same centre
    assert plan_segments(scan, SegmentSettings(crop="none"))[0].box is None
    near_edge = SourceScan(640, 480, 10.0, 100, [], [[k, 0, 0, 400, 400] for k in range(0, 100, 2)], None)
    assert plan_segments(near_edge, SegmentSettings())[0].box == [-100, -100, 500, 500]  # whole: padded black
    with pytest.raises(ValueError):
        SegmentSettings(min_clip_s=5.0, max_clip_s=4.0)


def test_split_goes_to_the_quietest_point_or_the_limit_without_audio() -> None:
    faces = list(range(0, 200, 2))
    energy = [1000] * 400
    energy[round(7.5 / 0.05)] = 0  # one quiet moment 7.5 s in: within 5 s before the 10 s limit
    split = plan_segments(_scan(20.0, faces, energy=energy), SegmentSettings(max_clip_s=10.0))
    assert [(s.start_s, s.end_s) for s in split][:1] == [(0.0, 7.5)]
    silent = plan_segments(_scan(20.0, faces), SegmentSettings(max_clip_s=10.0))
    assert [(s.start_s, s.end_s) for s in silent] == [(0.0, 10.0), (10.0, 19.9)]
