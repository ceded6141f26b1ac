"""Write metadata in the HDTF list format the embedded ``sample`` dataset reads (``SAMPLE_*.txt``)."""

from __future__ import annotations

from pathlib import Path


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
