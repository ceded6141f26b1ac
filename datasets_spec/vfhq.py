"""VFHQ: clips from the per-clip meta-info files of the VFHQ dataset.

Source: Xie, Wang, Zhang, Dong, Shan, "VFHQ: A High-Quality Dataset and Benchmark for
Video Face Super-Resolution", CVPR Workshops 2022,
https://liangbinxie.github.io/projects/vfhq/ (meta-info archive linked there).
Licence: non-commercial research only, no redistribution; nothing is shipped here.

One file per clip, ``Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt``: ``Video``, ``H``,
``W`` and ``FPS`` lines, per-frame face boxes, and a final ``CROP x0 y0 x1 y1`` box in
pixels of the H x W frame. The authors keep frames ``start+1 .. end-1`` and download
video only.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import quote

from aniportrait.ids import is_safe_id, safe_id
from aniportrait.schema import ClipRecord, CropSpec
from datasets_spec.errors import MetadataError

DATASET = "vfhq"
_PERSON = re.compile(r"^P(\d+)$")
_CLIP = re.compile(r"^C(\d+)$")
_FRAMES = re.compile(r"^F(\d+)-(\d+)$")
_HEADER_KEYS = ("Video", "H", "W", "FPS")


def prepare(metadata: str | Path | None = None, *, split: str = "train") -> list[ClipRecord]:
    """All clips of one meta-info file or a directory of them (searched recursively), sorted by id."""
    if metadata is None:
        raise MetadataError("VFHQ metadata is not shipped (no redistribution); pass the meta-info directory")
    root = Path(metadata)
    if root.is_dir():
        files = sorted(p for p in root.rglob("Clip+*.txt") if p.is_file())
        if not files:
            raise MetadataError("no Clip+*.txt meta-info files found", path=root)
    elif root.is_file():
        files = [root]
    else:
        raise MetadataError("no such file or directory", path=root)
    records: dict[str, ClipRecord] = {}
    for path in files:
        record = parse_clip_file(path, split=split)
        if record.clip_id in records:
            raise MetadataError(f"clip {record.clip_id} is described twice", path=path)
        records[record.clip_id] = record
    return [records[clip_id] for clip_id in sorted(records)]


def parse_clip_file(path: Path, *, split: str = "train") -> ClipRecord:
    """The record of one ``Clip+...txt`` meta-info file."""
    ytid, pid, idx, start, end = _parse_name(path)
    header, crop_line, crop_number = _read(path)
    if header["Video"] != ytid:
        raise MetadataError(f"Video line says {header['Video']!r} but the file name says {ytid!r}", path=path)
    height, width = _positive_int(header, "H", path), _positive_int(header, "W", path)
    return ClipRecord(
        dataset=DATASET,
        clip_id=safe_id(f"{ytid}_P{pid}_C{idx}_F{start}-{end}"),
        source_id=safe_id(ytid),
        source_url=f"https://www.youtube.com/watch?v={quote(ytid, safe='')}",
        mirror_names=(ytid,) if is_safe_id(ytid) else (),
        start_frame=start + 1,
        end_frame=end,
        source_fps=_fps(header, path),
        crop=_crop(crop_line, width, height, path, crop_number),
        expect_audio=False,
        max_height=height,
        split=split,
        provenance={"file": path.name},
        extra={"person": pid, "clip_index": idx},
    )


def _parse_name(path: Path) -> tuple[str, int, int, int, int]:
    """``(ytid, pid, clip_idx, start, end)`` from the file name (split on ``+`` only)."""
    fields = path.name.removesuffix(".txt").split("+")
    if len(fields) != 5 or fields[0] != "Clip" or not fields[1]:
        raise MetadataError("file name is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt", path=path)
    person, clip, frames = _PERSON.match(fields[2]), _CLIP.match(fields[3]), _FRAMES.match(fields[4])
    if person is None or clip is None or frames is None:
        raise MetadataError("file name is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt", path=path)
    start, end = int(frames.group(1)), int(frames.group(2))
    if end - start < 2:
        raise MetadataError(f"frame span F{start}-{end} keeps no frame", path=path)
    return fields[1], int(person.group(1)), int(clip.group(1)), start, end


def _read(path: Path) -> tuple[dict[str, str], list[str], int]:
    """The header values (last token of each header line) and the final CROP line."""
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    header: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if tokens and tokens[0] in _HEADER_KEYS:
            if len(tokens) < 2 or tokens[0] in header:
                raise MetadataError(f"bad or repeated {tokens[0]} line", path=path, line=number)
            header[tokens[0]] = tokens[-1]
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise MetadataError(f"missing header line(s) {', '.join(missing)}", path=path)
    numbered = [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]
    number, last = numbered[-1]
    if last[0] != "CROP" or len(last) != 5:
        raise MetadataError("missing final 'CROP x0 y0 x1 y1' line", path=path, line=number)
    return header, last[1:], number


def _positive_int(header: dict[str, str], key: str, path: Path) -> int:
    try:
        value = int(header[key])
    except ValueError:
        value = 0
    if value <= 0:
        raise MetadataError(f"{key} {header[key]!r} is not a positive integer", path=path)
    return value


def _fps(header: dict[str, str], path: Path) -> float:
    try:
        fps = float(header["FPS"])
    except ValueError:
        fps = math.nan
    if not math.isfinite(fps) or fps <= 0:
        raise MetadataError(f"FPS {header['FPS']!r} is not a positive number", path=path)
    return fps


def _crop(values: list[str], width: int, height: int, path: Path, number: int) -> CropSpec:
    try:
        x0, y0, x1, y1 = (int(value) for value in values)
        return CropSpec(kind="pixels", x0=x0, y0=y0, x1=x1, y1=y1, ref_width=width, ref_height=height)
    except ValueError as exc:
        raise MetadataError(f"bad CROP box {' '.join(values)!r}: {exc}", path=path, line=number) from None
