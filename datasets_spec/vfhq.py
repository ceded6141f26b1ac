"""VFHQ: clips from the per-clip meta-info files of the VFHQ dataset.

Source: Xie, Wang, Zhang, Dong, Shan, "VFHQ: A High-Quality Dataset and Benchmark for
Video Face Super-Resolution", CVPR Workshops 2022,
https://liangbinxie.github.io/projects/vfhq/ (meta-info archive linked there).
Licence: non-commercial research only, no redistribution; nothing is shipped here.

One file per clip, ``Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt``: ``Video``, ``H``,
``W`` and ``FPS`` lines, per-frame face boxes, and a final ``CROP x0 y0 x1 y1`` box in
pixels of the H x W frame. The authors keep frames ``start+1 .. end-1`` and download
video only.

Each file is one entry: a malformed file (name, header, CROP line, encoding) is an entry
error reported through ``errors``; a missing directory or one without any
``Clip+*.txt`` raises :class:`MetadataError`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import quote

from aniportrait.ids import is_safe_id, safe_id
from aniportrait.schema import ClipRecord, CropSpec
from datasets_spec.errors import MetadataError, dedupe_entry_ids, report
from datasets_spec.spec import VIDEOS_NOTE, DatasetSpec, Licence, register

DATASET = "vfhq"
_PERSON = re.compile(r"^P(\d+)$")
_CLIP = re.compile(r"^C(\d+)$")
_FRAMES = re.compile(r"^F(\d+)-(\d+)$")
_HEADER_KEYS = ("Video", "H", "W", "FPS")


#: A header key -> (its value, the line it is on).
_Header = dict[str, tuple[str, int]]


def prepare(
    metadata: str | Path | None = None, *, split: str = "train", errors: list[MetadataError] | None = None
) -> list[ClipRecord]:
    """All clips of one meta-info file or a directory of them (searched recursively), sorted by id.

    A malformed file goes to ``errors`` (or raises when it is ``None``).
    """
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
    first_error = len(errors) if errors is not None else 0
    records: dict[str, ClipRecord] = {}
    places: dict[str, Path] = {}
    for path in files:
        try:
            record = parse_clip_file(path, split=split)
        except MetadataError as error:
            clip_id, source_id = _entry_ids(path)
            report(error.for_entry(clip_id=clip_id, source_id=source_id), errors)
            continue
        if record.clip_id in records:
            also = places[record.clip_id].relative_to(root)  # only a directory can hold a clip twice
            twice = MetadataError(f"clip {record.clip_id} is described twice (also in {also})", path=path,
                                  clip_id=record.clip_id, source_id=record.source_id)
            report(twice, errors)
            continue
        records[record.clip_id] = record
        places[record.clip_id] = path
    ordered = [records[clip_id] for clip_id in sorted(records)]
    if errors is not None:
        dedupe_entry_ids(ordered, errors[first_error:])
    return ordered


def parse_clip_file(path: Path, *, split: str = "train") -> ClipRecord:
    """The record of one ``Clip+...txt`` meta-info file; raises :class:`MetadataError` if malformed."""
    ytid, pid, idx, start, end = _parse_name(path)
    if end - start < 2:
        raise MetadataError(f"frame span 'F{start}-{end}' keeps no frame (reversed or too short)", path=path)
    header, crop_line, crop_number = _read(path)
    video, video_line = header["Video"]
    if video != ytid:
        raise MetadataError(f"Video line says {video!r} but the file name says {ytid!r}", path=path, line=video_line)
    height, width = _positive_int(header, "H", path), _positive_int(header, "W", path)
    return ClipRecord(
        dataset=DATASET,
        clip_id=_clip_id(ytid, pid, idx, start, end),
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


def _clip_id(ytid: str, pid: int, idx: int, start: int, end: int) -> str:
    return safe_id(f"{ytid}_P{pid}_C{idx}_F{start}-{end}")


def _entry_ids(path: Path) -> tuple[str | None, str | None]:
    """The clip and source ids of a file's record, ``None`` when its name cannot be parsed."""
    try:
        ytid, pid, idx, start, end = _parse_name(path)
    except MetadataError:
        return None, None
    return _clip_id(ytid, pid, idx, start, end), safe_id(ytid)


def _parse_name(path: Path) -> tuple[str, int, int, int, int]:
    """``(ytid, pid, clip_idx, start, end)`` from the file name (split on ``+`` only)."""
    fields = path.name.removesuffix(".txt").split("+")
    if len(fields) == 5 and fields[0] == "Clip" and fields[1]:
        person, clip, frames = _PERSON.match(fields[2]), _CLIP.match(fields[3]), _FRAMES.match(fields[4])
        if person and clip and frames:
            return fields[1], int(person.group(1)), int(clip.group(1)), int(frames.group(1)), int(frames.group(2))
    raise MetadataError(f"file name {path.name!r} is not Clip+<ytid>+P<pid>+C<idx>+F<start>-<end>.txt", path=path)


def _read(path: Path) -> tuple[_Header, list[str], int]:
    """The header values (last token of each header line), the final CROP values and their line."""
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    header: _Header = {}
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if tokens and tokens[0] in _HEADER_KEYS:
            if len(tokens) < 2 or tokens[0] in header:
                raise MetadataError(f"bad or repeated {tokens[0]} line {line.strip()!r}", path=path, line=number)
            header[tokens[0]] = tokens[-1], number
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise MetadataError(f"missing header line(s) {', '.join(missing)}", path=path)
    numbered = [(number, line.split()) for number, line in enumerate(lines, start=1) if line.strip()]
    number, last = numbered[-1]
    if last[0] != "CROP" or len(last) != 5:
        raise MetadataError(
            f"missing final 'CROP x0 y0 x1 y1' line (last line is {' '.join(last)[:60]!r})", path=path, line=number
        )
    return header, last[1:], number


def _positive_int(header: _Header, key: str, path: Path) -> int:
    text, number = header[key]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise MetadataError(f"{key} {text!r} is not a positive integer", path=path, line=number)
    return value


def _fps(header: _Header, path: Path) -> float:
    text, number = header["FPS"]
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not math.isfinite(fps) or fps <= 0:
        raise MetadataError(f"FPS {text!r} is not a positive number", path=path, line=number)
    return fps


def _crop(values: list[str], width: int, height: int, path: Path, number: int) -> CropSpec:
    try:
        x0, y0, x1, y1 = (int(value) for value in values)
        return CropSpec(kind="pixels", x0=x0, y0=y0, x1=x1, y1=y1, ref_width=width, ref_height=height)
    except ValueError as exc:
        raise MetadataError(f"bad CROP box {' '.join(values)!r}: {exc}", path=path, line=number) from None


SPEC = register(DatasetSpec(
    name=DATASET,
    prepare=prepare,
    licence=Licence("other", "vfhq",
                    "VFHQ (Xie et al., CVPR Workshops 2022, https://liangbinxie.github.io/projects/vfhq/) is for "
                    "non-commercial research only, without redistribution. " + VIDEOS_NOTE),
    citation="""@inproceedings{xie2022vfhq,
  title={{VFHQ}: A High-Quality Dataset and Benchmark for Video Face Super-Resolution},
  author={Xie, Liangbin and Wang, Xintao and Zhang, Honglun and Dong, Chao and Shan, Ying},
  booktitle={IEEE/CVF Conference on Computer Vision and Pattern Recognition Workshops (CVPRW)},
  year={2022}
}""",
    homepage="https://liangbinxie.github.io/projects/vfhq/",
    mirror_naming="<youtube id>.<ext>",
    metadata_note="--metadata DIR of the official per-clip meta_info files, never shipped (not redistributable)",
))
