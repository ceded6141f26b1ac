"""Batch inference: job tables, reenactment retargeting, muxing, and `infer` end to end on a
local Ray with tiny random models (real portraits, real speech, real MediaPipe and ffmpeg)."""

from __future__ import annotations

import json
import math
import random
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from aniportrait.audio import SAMPLE_RATE, load_audio
from aniportrait.face import DEFAULT_MODEL
from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings
from aniportrait.media.probe import count_video_frames, probe
from aniportrait.retarget import resampled_length, tile_mirrored
from pipelines.inference.batch import InferSettings
from pipelines.inference.jobs import Job, JobTableError, read_jobs
from pipelines.inference.outputs import output_path, write_video
from pipelines.inference.report import REPORT_NAME
from pipelines.inference.reenact import reenact

EXIT_PARTIAL = 3
SIZE = 64


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def speech(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Real speech cut to exactly 1, 5 and 10 s of 16 kHz mono (looped: the source is 7.7 s)."""
    folder = tmp_path_factory.mktemp("speech")
    cuts = {}
    for seconds in (1, 5, 10):
        cuts[seconds] = folder / f"speech_{seconds}s.wav"
        _ffmpeg("-stream_loop", "1", "-i", str(media_dir / "speech_lyl.wav"), "-t", str(seconds),
                "-ac", "1", "-ar", str(SAMPLE_RATE), str(cuts[seconds]))
    return cuts


# ---------------------------------------------------------------------------- job tables


def test_job_table_resolves_paths_and_names_outputs_safely(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    table = tmp_path / "in" / "jobs.csv"
    table.write_text("job_id,portrait,audio,source_video,seed,steps\n"
                     "007,face.png,a.wav,,3,\n"
                     "../../escape,face.png,,/abs/v.mp4,,2.0\n"
                     ",other.png,b.wav,,,\n")
    jobs = read_jobs(table)
    assert [j.kind for j in jobs] == ["audio", "reenact", "audio"]
    assert jobs[0].job_id == "007" and jobs[0].name == "007" and jobs[0].seed == 3 and jobs[0].steps is None
    assert jobs[0].portrait == str(tmp_path / "in" / "face.png") and jobs[1].source_video == "/abs/v.mp4"
    assert jobs[1].steps == 2
    # an id that tries to leave --out becomes a safe name; its outputs stay inside
    out = str(tmp_path / "out")
    assert "/" not in jobs[1].name and "." not in jobs[1].name
    assert Path(output_path(out, jobs[1])).parent == Path(out)
    # a derived id is stable and names the inputs
    assert jobs[2].job_id.startswith("other-b-") and read_jobs(table)[2].job_id == jobs[2].job_id
    assert Job.from_json(jobs[1].to_json()) == jobs[1]
    # parquet: ids and numbers keep their meaning
    pq.write_table(pa.table({"job_id": [1, 2], "portrait": ["p.png"] * 2, "audio": ["a.wav", "b.wav"],
                             "seed": [None, 5]}), tmp_path / "jobs.parquet")
    jobs = read_jobs(tmp_path / "jobs.parquet")
    assert [(j.job_id, j.seed) for j in jobs] == [("1", None), ("2", 5)]


def test_job_table_reports_every_bad_row(tmp_path: Path) -> None:
    table = tmp_path / "jobs.csv"
    table.write_text("job_id,portrait,audio,source_video,pose_video,steps\n"
                     "a,p.png,a.wav,v.mp4,,\n"        # both drivers
                     "b,p.png,,,,\n"                  # no driver
                     "c,,a.wav,,,\n"                  # no portrait
                     "d,p.png,,v.mp4,pose.mp4,\n"     # pose video on a reenactment
                     "e,p.png,a.wav,,,0\n"            # steps < 1
                     "f/x,p.png,a.wav,,,\n"
                     "f/x,p.png,b.wav,,,\n")          # same output name twice
    with pytest.raises(JobTableError) as info:
        read_jobs(table)
    message = str(info.value)
    for expected in ("row 1 (a): give an audio file or a source video, not both", "row 2 (b): no audio",
                     "row 3 (c): no portrait", "row 4 (d): pose_video only applies to audio jobs",
                     "row 5 (e): steps must be a whole number >= 1", "row 7 (f/x): same output name"):
        assert expected in message
    table.write_text("portrait,audo\np.png,a.wav\n")
    with pytest.raises(JobTableError, match="unknown column.*audo"):
        read_jobs(table)
    (tmp_path / "jobs.txt").write_text("portrait,audio\n")
    with pytest.raises(JobTableError, match="expected a .parquet or .csv"):
        read_jobs(tmp_path / "jobs.txt")


# ---------------------------------------------------------------------------- reenactment


def test_retrained_weights_at_the_same_path_redo_the_jobs(tmp_path: Path) -> None:
    (tmp_path / "lmk2video").mkdir()
    for name in ("audio2mesh.pt", "audio2pose.pt", "lmk2video/denoising_unet.pth"):
        (tmp_path / name).write_bytes(b"weights")

    def fingerprint() -> str:
        settings = InferSettings(mesh_ckpt=str(tmp_path / "audio2mesh.pt"), pose_ckpt=str(tmp_path / "audio2pose.pt"),
                                 lmk2video_weights=str(tmp_path / "lmk2video"))
        return settings.fingerprint(Job(job_id="a", name="a", portrait="p.png", audio="a.wav"))

    before = fingerprint()
    assert fingerprint() == before
    (tmp_path / "lmk2video" / "denoising_unet.pth").write_bytes(b"retrained weights")
    assert fingerprint() != before


def test_tile_mirrored_plays_forth_and_back() -> None:
    pose = np.arange(4, dtype=float)[:, None].repeat(6, axis=1)
    assert tile_mirrored(pose, 9)[:, 0].tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert resampled_length(125, 25.0, 30.0) == 150 and resampled_length(62, 30000 / 1001, 30.0) == 62


# ---------------------------------------------------------------------------- muxing


def test_write_video_muxes_and_cuts_audio(tmp_path: Path, speech: dict[int, Path]) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (45, SIZE, SIZE, 3), dtype=np.uint8)
    out = tmp_path / "v.mp4"
    write_video(frames, 30.0, out, audio=str(speech[5]), audio_seconds=1.5)
    info = probe(out)
    assert count_video_frames(out) == 45 and info.fps == 30.0
    assert info.audio_duration_s == pytest.approx(1.5, abs=0.03)
    write_video(frames[:30], 30.0, out)  # no audio; replaces the file atomically
    assert count_video_frames(out) == 30 and not probe(out).has_audio
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary left


@pytest.fixture(scope="module")
def portrait_face_of(media_dir: Path):
    """The portrait's face at 256 px (MediaPipe), as the prepare step computes it."""
    from pipelines.inference.audio2lmk import portrait_face
    from pipelines.inference.batch import read_portrait

    return portrait_face(read_portrait(str(media_dir / "portrait_solo.png"), 256))


def test_reenacting_a_still_portrait_keeps_its_landmarks(tmp_path: Path, media_dir: Path, portrait_face_of) -> None:
    """A source that is the portrait itself, still: no motion, so the retargeted landmarks are
    the portrait's own (the mesh and pose round-trip through MediaPipe's geometry)."""
    still = tmp_path / "still.mp4"
    _ffmpeg("-loop", "1", "-i", str(media_dir / "portrait_solo.png"), "-t", "1", "-r", "25",
            "-vf", "scale=256:256", "-pix_fmt", "yuv420p", str(still))
    motion = reenact(still, portrait_face_of, FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL))))
    assert motion.lmks2d.shape == (30, 468, 2) and motion.mesh.shape == (30, 468, 3)  # 25 fps -> 30 fps
    assert np.abs(motion.pose6d[:, :3]).max() < 1.0  # degrees
    from aniportrait.geometry import project_points

    own = project_points(portrait_face_of.lmks3d, portrait_face_of.trans_mat, np.zeros((1, 6)), 256, 256)[0]
    assert np.abs(motion.lmks2d - own).max() < 3.0  # pixels of 256 (compression of the still video)


def test_reenacting_a_talking_video_moves_the_mouth(media_dir: Path, portrait_face_of) -> None:
    motion = reenact(media_dir / "talking_hdtf_radio10_0.mp4", portrait_face_of,
                     FaceLandmarkerRunner(LandmarkerSettings(str(DEFAULT_MODEL))))
    assert motion.lmks2d.shape == (62, 468, 2) and np.isfinite(motion.lmks2d).all()  # 62 frames at 29.97 fps
    assert np.allclose(motion.pose6d[0], 0, atol=1.0)  # relative to the first frame (smoothed)
    opening = motion.lmks2d[:, 14, 1] - motion.lmks2d[:, 13, 1]  # lower minus upper inner lip
    assert opening.max() - opening.min() > 1.0  # the speaker's mouth moves on the portrait


# ---------------------------------------------------------------------------- infer end to end


@pytest.fixture(scope="module")
def infer_run(media_dir: Path, speech: dict[int, Path], tiny_wav2vec2: Path, local_ray: None,
              tmp_path_factory: pytest.TempPathFactory):
    """`infer` on a local Ray with tiny random models: audio of 1 s (head pose from a video), 5 s
    and exactly 10 s, a 1 s reenactment, a text file as portrait and an image without a face;
    then the same command again."""
    from cli import app

    folder = tmp_path_factory.mktemp("infer")
    source = folder / "source_1s.mp4"
    _ffmpeg("-i", str(media_dir / "talking_hdtf_radio10_0.mp4"), "-t", "1", "-c:v", "libx264", "-c:a", "aac",
            str(source))
    (folder / "notes.png").write_text("not an image")
    import cv2

    cv2.imwrite(str(folder / "wall.png"), np.full((128, 128, 3), 90, np.uint8))  # no face in it
    rows = [("talk1", media_dir / "portrait_lyl.png", speech[1].name, "", source.name, ""),  # head pose from a video
            ("talk5", media_dir / "portrait_solo.png", speech[5].name, "", "", ""),  # pose_id drawn from the seed
            ("talk10", media_dir / "portrait_lyl.png", speech[10].name, "", "", "7"),
            ("reenact", media_dir / "portrait_solo.png", "", source.name, "", ""),
            ("text", "notes.png", speech[1].name, "", "", ""),
            ("noface", "wall.png", speech[1].name, "", "", "")]
    for cut in speech.values():
        (folder / cut.name).symlink_to(cut)
    table = folder / "jobs.csv"
    table.write_text("job_id,portrait,audio,source_video,pose_video,pose_id\n"
                     + "".join(f"{','.join(map(str, r))}\n" for r in rows))
    out = folder / "out"
    args = ["infer", "--jobs", str(table), "--out", str(out), "--tiny-random", "--size", str(SIZE), "--steps", "2",
            "--guidance", "1", "--wav2vec2", str(tiny_wav2vec2), "--workers", "2"]
    first = CliRunner().invoke(app, args)
    first_report = _report(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    second = CliRunner().invoke(app, args)
    return {"out": out, "first": first, "first_report": first_report, "second": second, "mtimes": mtimes,
            "speech": speech}


def _report(out: Path) -> dict[str, dict]:
    return {row["job_id"]: row for row in pq.read_table(out / REPORT_NAME).to_pylist()}


def test_infer_makes_videos_and_reports_bad_jobs(infer_run) -> None:
    first, out = infer_run["first"], infer_run["out"]
    assert first.exit_code == EXIT_PARTIAL, first.output
    assert "TINY RANDOM MODELS" in first.output
    report = infer_run["first_report"]
    assert list(report) == ["talk1", "talk5", "talk10", "reenact", "text", "noface"]
    for job_id, seconds in (("talk1", 1), ("talk5", 5), ("talk10", 10)):
        row, video = report[job_id], out / f"{job_id}.mp4"
        audio_s = len(load_audio(infer_run["speech"][seconds])) / SAMPLE_RATE
        assert audio_s == seconds
        assert row["status"] == "ok" and row["error"] == "" and row["output"] == str(video)
        assert row["frames"] == count_video_frames(video) == math.ceil(audio_s * 30)
        info = probe(video)
        assert info.fps == 30.0 and (info.width, info.height) == (SIZE, SIZE)
        assert info.audio_duration_s == pytest.approx(audio_s, abs=0.05)
        assert row["frames_per_s"] > 0 and row["video_s"] > 0
        assert json.loads((out / f"{job_id}.done.json").read_text())["frames"] == row["frames"]
    # the 1 s reenactment: 29.97 fps -> 30 fps, with the source's audio cut to the video
    reenacted = report["reenact"]
    assert reenacted["status"] == "ok" and reenacted["kind"] == "reenact"
    assert reenacted["frames"] == count_video_frames(out / "reenact.mp4") == 30
    assert probe(out / "reenact.mp4").audio_duration_s == pytest.approx(1.0, abs=0.05)
    assert report["text"]["status"] == "failed" and "not an image" in report["text"]["error"]
    assert report["noface"]["status"] == "failed" and "no face found in the portrait" in report["noface"]["error"]
    assert not (out / "text.mp4").exists() and not (out / "noface.mp4").exists()
    assert "no face found in the portrait" in first.output  # the printed table names the reason
    # Audio2Pose identities: the job's column, else drawn from the job's seed (--seed 42); none without Audio2Pose
    assert report["talk10"]["pose_id"] == 7 and report["talk5"]["pose_id"] == random.Random(42).randrange(100)
    assert report["talk1"]["pose_id"] is None and report["reenact"]["pose_id"] is None


def test_infer_rerun_skips_finished_jobs(infer_run) -> None:
    second, out = infer_run["second"], infer_run["out"]
    assert second.exit_code == EXIT_PARTIAL, second.output
    report = _report(out)
    assert {k: r["status"] for k, r in report.items()} == {
        "talk1": "skipped", "talk5": "skipped", "talk10": "skipped", "reenact": "skipped",
        "text": "failed", "noface": "failed"}
    assert report["talk10"]["frames"] == 300 and report["talk10"]["pose_id"] == 7
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == infer_run["mtimes"]


def test_infer_without_weights_is_a_setup_error(tmp_path: Path) -> None:
    from cli import app

    table = tmp_path / "jobs.csv"
    table.write_text("portrait,audio\np.png,a.wav\n")
    result = CliRunner().invoke(app, ["infer", "--jobs", str(table), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--mesh-ckpt" in result.output and "--tiny-random" in result.output
    table.write_text("portrait,audio,source_video\np.png,a.wav,v.mp4\n")
    result = CliRunner().invoke(app, ["infer", "--jobs", str(table), "--out", str(tmp_path / "out"), "--tiny-random"])
    assert result.exit_code == 2 and "row 1: give an audio file or a source video, not both" in result.output
    assert not (tmp_path / "out").exists()
