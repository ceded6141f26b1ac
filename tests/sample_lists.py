"""Helpers for builds of the embedded ``sample`` dataset: metadata in its HDTF list format
(``SAMPLE_*.txt``) and the options of the shared reference build (``conftest.sample_build``)."""

from __future__ import annotations

import shutil
from pathlib import Path

#: Frame size of the shared reference build of the sample, and so of every build a test
#: compares with it byte for byte (smaller frames make each build cheaper; the pipeline is
#: the same at any size).
SAMPLE_SIZE = 256
#: The same as CLI options.
SAMPLE_SIZE_ARGS = ("--size", str(SAMPLE_SIZE))


def write_sample_lists(folder: Path, videos: dict[str, tuple[str, list[str]]],
                       crops: dict[str, str] | None = None) -> Path:
    """HDTF-format ``SAMPLE_*`` lists: name -> (url, spans); crops: clip -> 'x w y h'."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SAMPLE_video_url.txt").write_text("".join(f"{n} {u}\n" for n, (u, _) in videos.items()))
    (folder / "SAMPLE_resolution.txt").write_text("".join(f"{n}.mp4 512\n" for n in videos))
    (folder / "SAMPLE_annotion_time.txt").write_text(
        "".join(f"{n}.mp4 {' '.join(spans)}\n" for n, (_, spans) in videos.items()))
    (folder / "SAMPLE_crop_wh.txt").write_text("".join(f"{c}.mp4 {box}\n" for c, box in (crops or {}).items()))
    (folder / "SAMPLE_crop_ratio.txt").write_text("")
    return folder


def copy_work(out: Path, dest: Path, clips: list[str] | None = None) -> Path:
    """A copy of the work area of the build in ``out`` (only the folders of ``clips`` when
    given) at ``dest``: a later build resumes those clips from their markers."""
    shutil.copytree(out / "_work", dest)
    for folder in (dest / "clips").iterdir():
        if clips is not None and folder.name not in clips:
            shutil.rmtree(folder)
    return dest
