"""One speaker per clip on real media: faces counted by MediaPipe's detector, jumps of the tracked face."""

from __future__ import annotations

import itertools
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aniportrait.face import DEFAULT_MODEL
from aniportrait.landmarks import NUM_LANDMARKS, FaceLandmarkerRunner, FaceTrack, LandmarkerSettings, iter_frame_chunks
from aniportrait.speakers import (
    COUNT_STEP,
    JUMP_CENTRE,
    MAX_GAP_FRAMES,
    FaceCounter,
    bundled_detector,
    track_jumps,
)

HDTF = "talking_hdtf_radio10_0.mp4"
LYL = "talking_lyl_7s.mp4"
HEAD = "head_pose_ref.mp4"


@dataclass
class Scanned:
    """One clip's VIDEO-mode face track and its face counts, from a single decode."""

    track: FaceTrack
    counts: dict

    @property
    def jumps(self) -> int:
        return track_jumps(self.track.lmks, self.track.has_face, self.track.width, self.track.height)


def scan(video: Path) -> Scanned:
    """Track ``video`` and feed a :class:`FaceCounter` from the tracker's ``on_frame`` hook, as the face stage does."""
    frames = itertools.count()
    with FaceCounter(str(DEFAULT_MODEL)) as counter:
        track = FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL))).track(
            video, on_frame=lambda frame, _lmks: counter.add(next(frames), frame))
        return Scanned(track, counter.result())


def ffmpeg_video(out: Path, inputs: list[Path], graph: str, seconds: float = 2.0) -> Path:
    """Encode the filter ``graph`` (output ``[v]``) of ``inputs`` to ``seconds`` of 30 fps H.264."""
    looped = [arg for path in inputs for arg in ((["-loop", "1"] if path.suffix == ".png" else []) + ["-i", str(path)])]
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *looped,
                    "-filter_complex", graph, "-map", "[v]", "-t", str(seconds), "-an", "-c:v", "libx264",
                    "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1", str(out)],
                   check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def scanned(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scanned]:
    """The real one-face clips and clips made from them with ffmpeg, each scanned once."""
    tmp = tmp_path_factory.mktemp("speakers")
    hdtf, lyl = media_dir / HDTF, media_dir / LYL
    square = "fps=30,scale={0}:{1},setsar=1"
    made = {
        # two talking people side by side, each squeezed to 256x512
        "side_by_side": ffmpeg_video(tmp / "side_by_side.mp4", [hdtf, lyl],
                                     f"[0:v]{square.format(256, 512)}[a];[1:v]{square.format(256, 512)}[b];"
                                     "[a][b]hstack[v]"),
        # two portraits side by side, each 256x256 in a 512x512 frame
        "portraits": ffmpeg_video(tmp / "portraits.mp4",
                                  [media_dir / "portrait_lyl.png", media_dir / "portrait_solo.png"],
                                  f"[0:v]{square.format(256, 256)}[a];[1:v]{square.format(256, 256)}[b];"
                                  "[a][b]hstack,pad=512:512:0:128[v]", seconds=1.0),
        # a distant second person: a 112 px portrait (face ~70 px) next to a ~240 px face
        "small_second": ffmpeg_video(tmp / "small_second.mp4", [hdtf, media_dir / "portrait_solo.png"],
                                     f"[0:v]fps=30[m];[1:v]{square.format(112, 112)}[s];[m][s]overlay=392:8[v]"),
        # two speakers joined: the HDTF clip, then talking_lyl scaled to 512x512
        "joined": ffmpeg_video(tmp / "joined.mp4", [hdtf, lyl],
                               "[0:v]fps=30,setsar=1[a];"
                               f"[1:v]{square.format(512, 512)},trim=duration=1,setpts=PTS-STARTPTS[b];"
                               "[a][b]concat=n=2:v=1:a=0[v]", seconds=3.0),
        # hard switch to a person elsewhere: one on the left half, then another on the right half
        "left_then_right": ffmpeg_video(tmp / "left_then_right.mp4", [hdtf, lyl],
                                        f"[0:v]{square.format(256, 256)},trim=duration=1,pad=512:512:0:128[a];"
                                        f"[1:v]{square.format(256, 256)},trim=duration=1,setpts=PTS-STARTPTS,"
                                        "pad=512:512:256:128[b];[a][b]concat=n=2:v=1:a=0[v]"),
        # hard switch to a person half the size: a full-frame face, then a 256x256 one in the centre
        "big_then_small": ffmpeg_video(tmp / "big_then_small.mp4", [hdtf, lyl],
                                       "[0:v]fps=30,setsar=1,trim=duration=1[a];"
                                       f"[1:v]{square.format(256, 256)},trim=duration=1,setpts=PTS-STARTPTS,"
                                       "pad=512:512:128:128[b];[a][b]concat=n=2:v=1:a=0[v]"),
    }
    videos = {name: media_dir / name for name in (HDTF, LYL, HEAD)} | made
    return {name: scan(video) for name, video in videos.items()}


# ------------------------------------------------------------------------------ face counts

def test_detector_comes_out_of_the_landmarker_bundle() -> None:
    model = bundled_detector(DEFAULT_MODEL)
    assert model[4:8] == b"TFL3"  # a TFLite flatbuffer


@pytest.mark.parametrize("name", [HDTF, LYL, HEAD])
def test_one_face_clip_has_one_face(scanned: dict[str, Scanned], name: str) -> None:
    scan_ = scanned[name]
    assert scan_.counts == {"faces_max": 1, "second_face_rate": 0.0,
                            "sampled": math.ceil(len(scan_.track.has_face) / COUNT_STEP)}


@pytest.mark.parametrize("name", ["side_by_side", "portraits"])
def test_two_people_side_by_side_are_counted(scanned: dict[str, Scanned], name: str) -> None:
    counts = scanned[name].counts
    assert counts["faces_max"] >= 2, counts
    assert counts["second_face_rate"] > 0.5, counts


def test_small_distant_face_is_not_a_second_speaker(scanned: dict[str, Scanned]) -> None:
    counts = scanned["small_second"].counts
    assert counts["faces_max"] == 2, counts  # the detector sees it ...
    assert counts["second_face_rate"] == 0.0, counts  # ... but it is under half the main face's height


def test_counter_samples_every_step_and_is_deterministic(media_dir: Path) -> None:
    frames = next(iter_frame_chunks(media_dir / HDTF, 12))[0]
    results = []
    for _ in range(2):
        with FaceCounter(str(DEFAULT_MODEL), step=5) as counter:
            for index, frame in enumerate(frames):
                counter.add(index, frame)
            counter.add(15, np.zeros_like(frames[0]))  # a black frame: no face
            results.append(counter.result())
    assert results[0] == results[1] == {"faces_max": 1, "second_face_rate": 0.0, "sampled": 4}
    with FaceCounter(str(DEFAULT_MODEL)) as counter:
        assert counter.result() == {"faces_max": 0, "second_face_rate": 0.0, "sampled": 0}


# ------------------------------------------------------------------------------ track jumps

@pytest.mark.parametrize("name", [HDTF, LYL, HEAD, "side_by_side"])
def test_head_motion_is_not_a_jump(scanned: dict[str, Scanned], name: str) -> None:
    assert scanned[name].track.has_face.all()
    assert scanned[name].jumps == 0


@pytest.mark.parametrize("name", ["joined", "left_then_right", "big_then_small"])
def test_switch_to_another_person_is_a_jump(scanned: dict[str, Scanned], name: str) -> None:
    assert scanned[name].jumps >= 1


def box_track(centres: list[tuple[float, float] | None], size: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks spread over a ``size`` square (normalised) at each centre; ``None``: a frame without a face."""
    corners = np.linspace(-size / 2, size / 2, NUM_LANDMARKS)
    lmks = np.full((len(centres), NUM_LANDMARKS, 3), np.nan, np.float32)
    for t, centre in enumerate(centres):
        if centre is not None:
            lmks[t, :, 0], lmks[t, :, 1], lmks[t, :, 2] = centre[0] + corners, centre[1] + corners, 0.0
    return lmks, np.array([c is not None for c in centres])


def test_jumps_bridge_short_gaps_and_count_once() -> None:
    step = 1.5 * JUMP_CENTRE * 0.5  # 1.5 thresholds for a 0.5-high face, per frame
    still = [(0.5, 0.5)] * 3
    assert track_jumps(*box_track(still), 512, 512) == 0
    assert track_jumps(*box_track(still + [(0.5 + step, 0.5)]), 512, 512) == 1
    assert track_jumps(*box_track(still + [(0.5 + step, 0.5), (0.5 + 2 * step, 0.5)]), 512, 512) == 1
    gap = [None] * MAX_GAP_FRAMES
    assert track_jumps(*box_track(still + gap + [(0.9, 0.5)]), 512, 512) == 1
    assert track_jumps(*box_track(still + gap + [None, (0.9, 0.5)]), 512, 512) == 0
    assert track_jumps(*box_track(still + gap + [(0.5 + step, 0.5)]), 512, 512) == 0  # slow over the gap
    assert track_jumps(*box_track([None, None]), 512, 512) == 0
