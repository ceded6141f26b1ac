"""HDTF: the official clip lists of the High-Definition Talking Face dataset.

Source: Zhang, Li, Ding, Fan, "Flow-Guided One-Shot Talking Face Generation With a
High-Resolution Audio-Visual Dataset", CVPR 2021, https://github.com/MRzzm/HDTF
(``HDTF_dataset/``). Licence: the lists are CC BY 4.0; they ship unmodified in
``datasets_spec/data/hdtf/`` (see the NOTICE.md there). The videos stay on YouTube.

Each subset ``RD``, ``WDA``, ``WRA`` has five lists, one video or clip per line:
``video_url`` (``name url``), ``resolution`` (``name height``: the frame height the
crops refer to), ``annotion_time`` (``name span span ...`` with ``mm:ss-mm:ss`` spans;
span ``k`` is clip ``name_k``), ``crop_wh`` (``name_k x w y h``: x offset, width,
y offset, height in pixels) and ``crop_ratio`` (``name_k ratio``, informational).
The real lists have a UTF-8 BOM in places, trailing spaces, missing final newlines and
names with or without ``.mp4``; some clips have no crop line and one video has
resolution 0: those clips get ``crop=None`` and the clip stage falls back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aniportrait.ids import is_safe_id, safe_id
from aniportrait.schema import ClipRecord, CropSpec
from datasets_spec.errors import MetadataError

log = logging.getLogger(__name__)

DATASET = "hdtf"
SUBSETS = ("RD", "WDA", "WRA")
#: Each list's name -> how many values may follow the name on a line (min, max).
LISTS = {
    "video_url": (1, 1),
    "resolution": (1, 1),
    "annotion_time": (0, None),
    "crop_wh": (4, 4),
    "crop_ratio": (1, 1),
}
#: The official lists shipped with this package.
DATA_DIR = Path(__file__).parent / "data" / "hdtf"

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_TIME = re.compile(r"^(?:(\d+):)?(\d+):(\d{2})$")


@dataclass(frozen=True, slots=True)
class _Line:
    """One non-blank line of a list: its name (without ``.mp4``) and other fields."""

    name: str
    fields: tuple[str, ...]
    path: Path
    number: int

    def error(self, message: str) -> MetadataError:
        return MetadataError(message, path=self.path, line=self.number)


def prepare(
    metadata: str | Path | None = None, *, split: str = "train", subsets: Sequence[str] = SUBSETS
) -> list[ClipRecord]:
    """All HDTF clips, sorted by clip id.

    ``metadata`` is a directory holding the 15 official lists; ``None`` uses the copy
    shipped with this package. ``subsets`` names the list prefixes to read (other
    datasets in the HDTF format use their own prefix).
    """
    directory = DATA_DIR if metadata is None else Path(metadata)
    if not directory.is_dir():
        raise MetadataError("not a directory holding the HDTF lists", path=directory)
    records: dict[str, ClipRecord] = {}
    for subset in subsets:
        for record in _subset_records(directory, subset, split):
            previous = records.get(record.clip_id)
            if previous is not None:
                raise MetadataError(
                    f"clip id {record.clip_id!r} appears in subsets "
                    f"{previous.provenance['subset']} and {subset}",
                    path=directory,
                )
            records[record.clip_id] = record
    return [records[clip_id] for clip_id in sorted(records)]


def youtube_id(url: str) -> str | None:
    """The 11-character video id of a YouTube URL (``watch?v=``, ``youtu.be/``, ``/shorts/``)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    candidate: str | None = None
    if host == "youtu.be":
        candidate = parts.path.strip("/")
    elif host == "youtube.com" or host.endswith(".youtube.com"):
        if parts.path.startswith("/shorts/"):
            candidate = parts.path[len("/shorts/") :].strip("/")
        else:
            candidate = next(iter(parse_qs(parts.query).get("v", [])), None)
    if candidate and _YOUTUBE_ID.match(candidate):
        return candidate
    return None


def _parse_time(text: str) -> int:
    """Seconds of ``mm:ss`` or ``h:mm:ss``; raises ``ValueError`` on anything else."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"bad time {text!r}")
    hours, minutes, seconds = (int(group) if group else 0 for group in match.groups())
    if seconds >= 60 or (match.group(1) is not None and minutes >= 60):
        raise ValueError(f"bad time {text!r}")
    return hours * 3600 + minutes * 60 + seconds


def _strip_mp4(name: str) -> str:
    return name[: -len(".mp4")] if name.endswith(".mp4") else name


def _read_list(path: Path, min_fields: int, max_fields: int | None) -> dict[str, _Line]:
    """The non-blank lines of one list keyed by name; BOM, CRLF and stray spaces are fine."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise MetadataError("missing HDTF list", path=path) from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    lines: dict[str, _Line] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        line = _Line(_strip_mp4(tokens[0]), tuple(tokens[1:]), path, number)
        if len(line.fields) < min_fields or (max_fields is not None and len(line.fields) > max_fields):
            raise line.error(f"wrong number of values after the name in {raw.strip()!r}")
        if line.name in lines:
            raise line.error(f"{line.name!r} already listed on line {lines[line.name].number}")
        lines[line.name] = line
    return lines


def _span(text: str, line: _Line) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        span = _parse_time(start), _parse_time(end)
    except ValueError:
        raise line.error(f"malformed span {text!r} (want mm:ss-mm:ss)") from None
    if span[1] <= span[0]:
        raise line.error(f"empty span {text!r}")
    return span


def _spans(line: _Line) -> list[tuple[int, int]]:
    spans = [_span(text, line) for text in line.fields]
    for (_, prev_end), (start, _) in pairwise(spans):
        if start < prev_end:
            log.warning(
                "%s:%d: spans of %s overlap or are out of order; kept as listed",
                line.path.name,
                line.number,
                line.name,
            )
            break
    return spans


def _resolution(line: _Line | None) -> int | None:
    """The reference height, or ``None`` (with a warning) when it is missing or not positive."""
    if line is None:
        return None
    try:
        height = int(line.fields[0])
    except ValueError:
        raise line.error(f"resolution {line.fields[0]!r} is not an integer") from None
    if height <= 0:
        log.warning(
            "%s:%d: %s has resolution %d; its clips get no crop",
            line.path.name,
            line.number,
            line.name,
            height,
        )
        return None
    return height


def _crop(line: _Line | None, height: int | None) -> CropSpec | None:
    if line is None or height is None:
        return None
    try:
        x, w, y, h = (int(value) for value in line.fields)
        return CropSpec(kind="pixels", x0=x, y0=y, x1=x + w, y1=y + h, ref_height=height)
    except ValueError as exc:
        raise line.error(f"bad crop {' '.join(line.fields)!r}: {exc}") from None


def _ratio(line: _Line | None) -> dict[str, float]:
    if line is None:
        return {}
    try:
        return {"crop_ratio": float(line.fields[0])}
    except ValueError:
        raise line.error(f"crop ratio {line.fields[0]!r} is not a number") from None


def _mirror_names(name: str, url: str) -> tuple[str, ...]:
    names = [youtube_id(url), name if is_safe_id(name) else None]
    return tuple(dict.fromkeys(n for n in names if n))


def _subset_records(directory: Path, subset: str, split: str) -> list[ClipRecord]:
    """The clips of one subset (``RD``, ``WDA`` or ``WRA``)."""
    lists = {kind: _read_list(directory / f"{subset}_{kind}.txt", *bounds) for kind, bounds in LISTS.items()}
    urls, times, crops = lists["video_url"], lists["annotion_time"], lists["crop_wh"]
    records: list[ClipRecord] = []
    used_crops: set[str] = set()
    for name, time_line in times.items():
        url_line = urls.get(name)
        if url_line is None:
            log.warning(
                "%s:%d: %s has no URL in %s_video_url.txt; skipped",
                time_line.path.name,
                time_line.number,
                name,
                subset,
            )
            continue
        url = url_line.fields[0]
        height = _resolution(lists["resolution"].get(name))
        for k, (start, end) in enumerate(_spans(time_line)):
            clip = f"{name}_{k}"
            used_crops.add(clip)
            records.append(
                ClipRecord(
                    dataset=DATASET,
                    clip_id=safe_id(clip),
                    source_id=safe_id(name),
                    source_url=url,
                    mirror_names=_mirror_names(name, url),
                    start_s=float(start),
                    end_s=float(end),
                    crop=_crop(crops.get(clip), height),
                    expect_audio=True,
                    max_height=height,
                    split=split,
                    provenance={"subset": subset, "file": time_line.path.name, "line": time_line.number},
                    extra=_ratio(lists["crop_ratio"].get(clip)),
                )
            )
    for clip in sorted(set(crops) - used_crops):
        log.warning(
            "%s:%d: crop for %s, a clip not in %s_annotion_time.txt; ignored",
            crops[clip].path.name,
            crops[clip].number,
            clip,
            subset,
        )
    return records
