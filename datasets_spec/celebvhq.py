"""CelebV-HQ: clips, boxes and attributes from the authors' ``celebvhq_info.json``.

Source: Zhu, Wu, Zhu, Jiang, Tang, Zhang, Liu, Loy, "CelebV-HQ: A Large-Scale Video
Facial Attributes Dataset", ECCV 2022, https://github.com/CelebV-HQ/CelebV-HQ.
Licence: non-commercial research only; the metadata may not be redistributed, so it is
not shipped here: :func:`download_metadata` fetches the pinned file and checks its git
blob id.

Crop rule (the authors' ``download_and_process.py``, ``process_ffmpeg``): the
normalised box (top, bottom, left, right) grows by 0.02 on every side, clamped to
[0, 1], is denormalised with ``round`` and shrunk to a centred square of side
``2 * (min(h, w) // 2)``. Records carry that as ``CropSpec(kind="normalized",
expand=0.02, square=True)``; the clip stage applies it.

A file that cannot be read as a whole raises :class:`MetadataError`; a malformed clip is
an entry error (named by its key) reported through ``errors``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aniportrait.ids import is_safe_id, safe_id
from aniportrait.schema import ClipRecord, CropSpec
from datasets_spec.errors import MetadataError, dedupe_entry_ids, report
from datasets_spec.integrity import git_blob_sha1
from datasets_spec.spec import VIDEOS_NOTE, DatasetSpec, Licence, register

log = logging.getLogger(__name__)

DATASET = "celebvhq"
INFO_NAME = "celebvhq_info.json"
CELEBVHQ_INFO_URL = (
    "https://raw.githubusercontent.com/CelebV-HQ/CelebV-HQ/"
    "d1b6cf3ace513de8c9af3f2b72860ac7533e81ef/celebvhq_info.json"
)
#: git blob id of ``celebvhq_info.json`` at that commit.
CELEBVHQ_INFO_BLOB = "93f27ee557668bc0f92bd69be1ca68e34896ad28"
#: How far the authors grow the normalised box on every side before squaring it.
CROP_EXPAND = 0.02

_Fail = Callable[[str], MetadataError]


def download_metadata(
    dest_dir: str | Path,
    *,
    url: str = CELEBVHQ_INFO_URL,
    expected_blob: str = CELEBVHQ_INFO_BLOB,
    timeout_s: float = 60.0,
) -> Path:
    """Fetch ``celebvhq_info.json`` into ``dest_dir`` and return its path.

    The bytes must have the git blob id ``expected_blob``; otherwise
    :class:`MetadataError` is raised and nothing is left in ``dest_dir``. A file already
    there with the right id is kept without downloading. Network errors propagate.
    """
    dest = Path(dest_dir)
    target = dest / INFO_NAME
    if target.is_file() and git_blob_sha1(target.read_bytes()) == expected_blob:
        return target
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        data = response.read()
    actual = git_blob_sha1(data)
    if actual != expected_blob:
        raise MetadataError(f"downloaded {url} has git blob id {actual}, expected {expected_blob}; not saved")
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{INFO_NAME}.", suffix=".part", dir=dest)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log.info("saved %s (%d bytes, blob %s)", target, len(data), actual)
    return target


def prepare(
    metadata: str | Path | None = None, *, split: str = "train", errors: list[MetadataError] | None = None
) -> list[ClipRecord]:
    """All clips of ``celebvhq_info.json`` (the file, or a directory holding it), sorted by id.

    A malformed clip goes to ``errors`` (or raises when it is ``None``); a file that
    cannot be read as a whole always raises.
    """
    if metadata is None:
        raise MetadataError(
            f"CelebV-HQ metadata is not shipped (no redistribution); fetch it with "
            f"download_metadata(dir) and pass the path of {INFO_NAME}"
        )
    path = Path(metadata)
    if path.is_dir():
        path = path / INFO_NAME
    info = _load(path)
    appearance, action = _mappings(info, path)
    clips = info.get("clips")
    if not isinstance(clips, dict):
        raise MetadataError('no "clips" object', path=path)
    first_error = len(errors) if errors is not None else 0
    records: list[ClipRecord] = []
    for key, clip in clips.items():
        try:
            records.append(_record(key, clip, path, split, appearance, action))
        except MetadataError as error:
            report(error, errors)
    records.sort(key=lambda record: record.clip_id)
    if errors is not None:
        dedupe_entry_ids(records, errors[first_error:])
    return records


def _load(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MetadataError("file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise MetadataError(f"not UTF-8 text ({exc.reason})", path=path) from None
    except json.JSONDecodeError as exc:
        raise MetadataError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", path=path, line=exc.lineno
        ) from None
    if not isinstance(info, dict):
        raise MetadataError("top level is not a JSON object", path=path)
    return info


def _mappings(info: dict[str, Any], path: Path) -> tuple[list[str], list[str]]:
    """The attribute names of ``meta_info`` (appearance, action)."""
    meta = info.get("meta_info")
    names: list[list[str]] = []
    for key in ("appearance_mapping", "action_mapping"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MetadataError(f'"meta_info" has no {key} list of names', path=path)
        names.append(value)
    return names[0], names[1]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _field(clip: dict[str, Any], name: str) -> dict[str, Any]:
    value = clip.get(name)
    return value if isinstance(value, dict) else {}


def _span(clip: dict[str, Any], fail: _Fail) -> tuple[float, float]:
    duration = _field(clip, "duration")
    start, end = _number(duration.get("start_sec")), _number(duration.get("end_sec"))
    if start is None or end is None or start < 0 or end <= start:
        raise fail(f"bad duration {clip.get('duration')!r}")
    return start, end


def _crop(clip: dict[str, Any], fail: _Fail) -> CropSpec:
    bbox = _field(clip, "bbox")
    sides = [_number(bbox.get(side)) for side in ("top", "bottom", "left", "right")]
    box = [v for v in sides if v is not None and 0.0 <= v <= 1.0]
    if len(box) != 4 or box[1] <= box[0] or box[3] <= box[2]:
        raise fail(f"bbox {clip.get('bbox')!r} is not a non-empty box inside [0, 1]")
    top, bottom, left, right = box
    return CropSpec(kind="normalized", x0=left, y0=top, x1=right, y1=bottom, expand=CROP_EXPAND, square=True)


def _flags(values: Any, names: list[str], what: str, fail: _Fail) -> list[str]:
    """The names of the 1-flags of an attribute vector."""
    if not isinstance(values, list) or len(values) != len(names) or any(v not in (0, 1) for v in values):
        raise fail(f"{what} is not a 0/1 list of length {len(names)}")
    return [name for name, flag in zip(names, values, strict=True) if flag == 1]


def _extra(clip: dict[str, Any], appearance: list[str], action: list[str], fail: _Fail) -> dict[str, Any]:
    attributes = _field(clip, "attributes")
    emotion = attributes.get("emotion")
    if not isinstance(emotion, dict) or "labels" not in emotion:
        raise fail("attributes.emotion has no labels")
    return {
        "appearance": _flags(attributes.get("appearance"), appearance, "attributes.appearance", fail),
        "action": _flags(attributes.get("action"), action, "attributes.action", fail),
        "emotion": emotion["labels"],
        "version": clip.get("version"),
    }


def _record(
    key: str, clip: Any, path: Path, split: str, appearance: list[str], action: list[str]
) -> ClipRecord:
    """One clip, validated; errors name the clip key (and its ids)."""
    clip_id = safe_id(key)
    ytb_id = clip.get("ytb_id") if isinstance(clip, dict) else None
    source_id = safe_id(ytb_id) if isinstance(ytb_id, str) and ytb_id else None

    def fail(message: str) -> MetadataError:
        return MetadataError(f"clip {key!r}: {message}", path=path, key=key, clip_id=clip_id, source_id=source_id)

    if not isinstance(clip, dict):
        raise fail(f"not a JSON object: {clip!r:.80}")
    if source_id is None:
        raise fail("missing ytb_id" if ytb_id is None else f"ytb_id {ytb_id!r} is not a non-empty string")
    start, end = _span(clip, fail)
    return ClipRecord(
        dataset=DATASET,
        clip_id=clip_id,
        source_id=source_id,
        source_url=f"https://www.youtube.com/watch?v={quote(ytb_id, safe='')}",
        mirror_names=(ytb_id,) if is_safe_id(ytb_id) else (),
        start_s=start,
        end_s=end,
        crop=_crop(clip, fail),
        expect_audio=True,
        split=split,
        provenance={"file": path.name, "key": key},
        extra=_extra(clip, appearance, action, fail),
    )


SPEC = register(DatasetSpec(
    name=DATASET,
    prepare=prepare,
    licence=Licence("other", "celebv-hq",
                    "CelebV-HQ (Zhu et al., ECCV 2022, https://github.com/CelebV-HQ/CelebV-HQ) is for "
                    "non-commercial research only and its metadata may not be redistributed. " + VIDEOS_NOTE),
    citation="""@inproceedings{zhu2022celebvhq,
  title={{CelebV-HQ}: A Large-Scale Video Facial Attributes Dataset},
  author={Zhu, Hao and Wu, Wayne and Zhu, Wentao and Jiang, Liming and Tang, Siwei and Zhang, Li and Liu, Ziwei and Loy, Chen Change},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2022}
}""",
    homepage="https://github.com/CelebV-HQ/CelebV-HQ",
    mirror_naming="<youtube id>.<ext>",
    metadata_note=("--metadata celebvhq_info.json, never shipped (not redistributable); "
                   "celebvhq.download_metadata(DIR) fetches it and checks its git blob id"),
))
