"""HDTF: the official clip lists of the High-Definition Talking Face dataset.

Source: Zhang, Li, Ding, Fan, "Flow-Guided One-Shot Talking Face Generation With a
High-Resolution Audio-Visual Dataset", CVPR 2021, https://github.com/MRzzm/HDTF
(``HDTF_dataset/``). Licence: the lists are CC BY 4.0; they ship unmodified in
``datasets_spec/data/hdtf/`` (see the NOTICE.md there). The videos stay on YouTube.

Each subset (official ``RD``, ``WDA``, ``WRA``; any ``<PREFIX>_video_url.txt`` marks one)
has five lists, one video or clip per line:
``video_url`` (``name url``), ``resolution`` (``name height``: the frame height the
crops refer to), ``annotion_time`` (``name span span ...`` with ``mm:ss-mm:ss`` spans;
span ``k`` is clip ``name_k``), ``crop_wh`` (``name_k x w y h``: x offset, width,
y offset, height in pixels) and ``crop_ratio`` (``name_k ratio``, informational).
The real lists have a UTF-8 BOM in places, trailing spaces, missing final newlines and
names with or without ``.mp4``; some clips have no crop line and one video has
resolution 0: those clips get ``crop=None`` and the clip stage falls back.

Entry errors are reported through ``errors`` (see :mod:`datasets_spec.errors`), one per
clip: a malformed span fails its clip, a bad or missing URL or resolution line all clips
of the video, a bad crop or ratio line its clip; a repeated name is an error of the later
line. Malformed lines of no clip are reported too; a crop of no clip is only a warning.
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
from datasets_spec.errors import MetadataError, dedupe_entry_ids, report
from datasets_spec.spec import VIDEOS_NOTE, DatasetSpec, Licence, register

log = logging.getLogger(__name__)

DATASET = "hdtf"
#: The official subsets (list prefixes); other prefixes are read too.
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
    """One non-blank line of a list: its name (without ``.mp4``), other fields, and what is wrong with it."""

    name: str
    fields: tuple[str, ...]
    path: Path
    number: int
    problem: str | None = None

    def error(self, message: str, *, clip: str | None = None, source: str | None = None) -> MetadataError:
        return MetadataError(
            message,
            path=self.path,
            line=self.number,
            clip_id=safe_id(clip) if clip is not None else None,
            source_id=safe_id(source) if source is not None else None,
        )


@dataclass(frozen=True, slots=True)
class _List:
    """One list: the first line of each name (``problem`` set when malformed), and later repeats."""

    first: dict[str, _Line]
    repeats: tuple[_Line, ...]

    def get(self, name: str) -> _Line | None:
        """The line of ``name`` (``None`` when absent); raises when it is malformed."""
        line = self.first.get(name)
        if line is not None and line.problem is not None:
            raise line.error(line.problem)
        return line


def subsets_in(directory: str | Path) -> tuple[str, ...]:
    """The list prefixes of a folder: ``PREFIX`` of every ``<PREFIX>_video_url.txt``, sorted."""
    suffix = "_video_url.txt"
    return tuple(
        sorted(
            path.name[: -len(suffix)]
            for path in Path(directory).glob(f"*{suffix}")
            if path.is_file() and len(path.name) > len(suffix)
        )
    )


def prepare(
    metadata: str | Path | None = None,
    *,
    split: str = "train",
    subsets: Sequence[str] | None = None,
    errors: list[MetadataError] | None = None,
) -> list[ClipRecord]:
    """All HDTF clips, sorted by clip id; malformed entries go to ``errors`` (or raise without it).

    ``metadata`` is a directory holding the lists; ``None`` uses the copy shipped with
    this package. ``subsets`` names the list prefixes to read; ``None`` reads every
    prefix found there (:func:`subsets_in`; other datasets in the HDTF format use their
    own prefix).
    """
    directory = DATA_DIR if metadata is None else Path(metadata)
    if not directory.is_dir():
        raise MetadataError("not a directory holding the HDTF lists", path=directory)
    chosen = subsets_in(directory) if subsets is None else tuple(subsets)
    if not chosen:
        raise MetadataError("no <PREFIX>_video_url.txt list here", path=directory)
    log.info("reading HDTF subsets %s from %s", ", ".join(chosen), directory)
    first_error = len(errors) if errors is not None else 0
    records: dict[str, ClipRecord] = {}
    for subset in chosen:
        for record in _subset_records(directory, subset, split, errors):
            previous = records.get(record.clip_id)
            if previous is None:
                records[record.clip_id] = record
                continue
            message = f"clip id {record.clip_id!r} appears in subsets {previous.provenance['subset']} and {subset}"
            path = directory / record.provenance["file"]
            error = MetadataError(message, path=path, line=record.provenance["line"], clip_id=record.clip_id,
                                  source_id=record.source_id)
            report(error, errors)
    ordered = [records[clip_id] for clip_id in sorted(records)]
    if errors is not None:
        dedupe_entry_ids(ordered, errors[first_error:])
    return ordered


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


def _read_list(path: Path, min_fields: int, max_fields: int | None) -> _List:
    """The non-blank lines of one list by name; BOM, CRLF and stray spaces are fine.

    Raises only when the whole list cannot be read; a line with the wrong number of
    values or a name already listed is kept with its ``problem``.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise MetadataError(f"missing HDTF list {path.name}", path=path) from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
    first: dict[str, _Line] = {}
    repeats: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        name, fields = _strip_mp4(tokens[0]), tuple(tokens[1:])
        problem = None
        if name in first:
            problem = f"{name!r} already listed on line {first[name].number}"
        elif len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
            problem = f"wrong number of values after the name in {raw.strip()!r}"
        line = _Line(name, fields, path, number, problem)
        if name in first:
            repeats.append(line)
        else:
            first[name] = line
    return _List(first, tuple(repeats))


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


def _warn_overlaps(line: _Line, spans: list[tuple[int, int]]) -> None:
    for (_, prev_end), (start, _) in pairwise(spans):
        if start < prev_end:
            log.warning(
                "%s:%d: spans of %s overlap or are out of order; kept as listed",
                line.path.name,
                line.number,
                line.name,
            )
            return


def _video(time_line: _Line, subset: str, urls: _List, resolutions: _List) -> tuple[str, int | None]:
    """The URL and reference height of a video; raises when a line is missing or malformed."""
    url_line = urls.get(time_line.name)
    if url_line is None:
        raise time_line.error(f"no URL for {time_line.name} in {subset}_video_url.txt")
    return url_line.fields[0], _resolution(resolutions.get(time_line.name))


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


def _subset_records(
    directory: Path, subset: str, split: str, errors: list[MetadataError] | None
) -> list[ClipRecord]:
    """The clips of one subset (``RD``, ``WDA``, ``WRA`` or another prefix)."""
    lists: dict[str, _List] = {}
    unreadable: list[MetadataError] = []
    for kind, bounds in LISTS.items():
        try:
            lists[kind] = _read_list(directory / f"{subset}_{kind}.txt", *bounds)
        except MetadataError as error:
            if errors is None:
                raise
            unreadable.append(error)
    if errors is not None and unreadable:
        errors.extend(_unreadable_errors(lists.get("annotion_time"), unreadable))
        return []
    urls, resolutions, times, crops, ratios = (lists[kind] for kind in LISTS)
    records: list[ClipRecord] = []
    for name, time_line in times.first.items():
        try:
            url, height = _video(time_line, subset, urls, resolutions)
            video_error = None
        except MetadataError as error:
            video_error = error
        spans: list[tuple[int, int]] = []
        for k, text in enumerate(time_line.fields):
            clip = f"{name}_{k}"
            try:
                if video_error is not None:
                    raise video_error
                start, end = _span(text, time_line)
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
                        extra=_ratio(ratios.get(clip)),
                    )
                )
                spans.append((start, end))
            except MetadataError as error:
                report(error.for_entry(clip_id=safe_id(clip), source_id=safe_id(name)), errors)
        _warn_overlaps(time_line, spans)
    _report_stray_lines(lists, subset, errors)
    return records


def _report_stray_lines(lists: dict[str, _List], subset: str, errors: list[MetadataError] | None) -> None:
    """Report repeated names and malformed lines of no clip; warn about crops of no clip."""
    times = lists["annotion_time"]
    clips = {f"{line.name}_{k}" for line in times.first.values() for k in range(len(line.fields))}
    for kind, listed in lists.items():
        per_video = kind in ("video_url", "resolution", "annotion_time")
        for line in listed.repeats:
            # a repeated annotion_time line fails each of its spans (fallback ids: name_k is taken)
            count = max(len(line.fields), 1) if kind == "annotion_time" else 1
            for _ in range(count):
                report(line.error(str(line.problem), source=line.name if per_video else None), errors)
        for name, line in listed.first.items():
            if name in (times.first if per_video else clips):
                continue
            if line.problem is not None:
                report(line.error(line.problem, source=name if per_video else None), errors)
            elif kind == "crop_wh":
                log.warning(
                    "%s:%d: crop for %s, a clip not in %s_annotion_time.txt; ignored",
                    line.path.name,
                    line.number,
                    name,
                    subset,
                )


def _unreadable_errors(times: _List | None, unreadable: list[MetadataError]) -> list[MetadataError]:
    """A subset with lists missing or unreadable: one error per clip, or one for the subset."""
    message = "; ".join(error.reason for error in unreadable)
    if times is None:
        return [MetadataError(message, path=unreadable[0].path)]
    return [
        line.error(message, clip=f"{line.name}_{k}", source=line.name)
        for line in (*times.first.values(), *times.repeats)
        for k in range(len(line.fields))
    ]


SPEC = register(DatasetSpec(
    name=DATASET,
    prepare=prepare,
    licence=Licence("cc-by-4.0", None,
                    "The HDTF clip lists are CC BY 4.0 (Zhang, Li, Ding, Fan, CVPR 2021, "
                    "https://github.com/MRzzm/HDTF). " + VIDEOS_NOTE),
    citation="""@inproceedings{zhang2021flow,
  title={Flow-Guided One-Shot Talking Face Generation With a High-Resolution Audio-Visual Dataset},
  author={Zhang, Zhimeng and Li, Lincheng and Ding, Yu and Fan, Changjie},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  pages={3661--3670},
  year={2021}
}""",
    homepage="https://github.com/MRzzm/HDTF",
    mirror_naming="<youtube id>.<ext> or <video name>.<ext> (e.g. Radio11.mp4)",
    metadata_note="the 15 official lists ship as package data (CC BY 4.0); --metadata DIR for another copy",
))
