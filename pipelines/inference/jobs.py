"""The job table of ``aniportrait-data infer``: one row per video to make.

A table is a Parquet or CSV file with the columns

- ``portrait`` (required): the reference image;
- ``audio`` (audio-driven job) or ``source_video`` (face reenactment): exactly one per row;
- ``job_id`` (optional): names the outputs; derived from the inputs when absent or empty;
- ``pose_video`` (optional, audio jobs only): a head-pose reference video whose motion
  replaces the generated head pose;
- ``seed``, ``steps`` (optional): per-job overrides of ``--seed`` and ``--steps``;
- ``pose_id`` (optional, audio jobs without ``pose_video``): the Audio2Pose identity (head-motion
  style), overriding ``--pose-id``; without either it is drawn from the job's seed.

Relative paths are relative to the table's folder. Output names are job ids reduced to
``[A-Za-z0-9_-]`` (:func:`aniportrait.ids.safe_id`), so no job id can write outside
``--out``. Every problem of the table is reported at once, one line per row; whether
the files exist and can be read is checked per job when it runs (a bad file fails
that job only).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aniportrait.ids import safe_id

KIND_AUDIO = "audio"
KIND_REENACT = "reenact"
COLUMNS = ("job_id", "portrait", "audio", "source_video", "pose_video", "seed", "steps", "pose_id")
PATH_COLUMNS = ("portrait", "audio", "source_video", "pose_video")


class JobTableError(ValueError):
    """The job table cannot be used; the message lists every problem (row by row)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the job table, with absolute paths and a safe output ``name``."""

    job_id: str
    name: str
    portrait: str
    audio: str | None = None
    source_video: str | None = None
    pose_video: str | None = None
    seed: int | None = None
    steps: int | None = None
    pose_id: int | None = None

    @property
    def kind(self) -> str:
        """``audio`` (portrait + speech) or ``reenact`` (portrait + source video)."""
        return KIND_AUDIO if self.audio else KIND_REENACT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


def read_jobs(path: str | Path) -> list[Job]:
    """The jobs of a ``.parquet`` or ``.csv`` table, validated; raises :class:`JobTableError`."""
    path = Path(path).expanduser()
    rows = _read_rows(path)
    if not rows:
        raise JobTableError(f"the job table {path} has no rows")
    columns = set(rows[0])
    unknown = sorted(columns - set(COLUMNS))
    problems: list[str] = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}")
    if "portrait" not in columns:
        problems.append("missing the portrait column")
    if not columns & {"audio", "source_video"}:
        problems.append("needs an audio column (audio-driven jobs) or a source_video column (reenactment)")
    if problems:
        raise JobTableError(f"job table {path}: " + "; ".join(problems))
    jobs: list[Job] = []
    first: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        label = _cell(row.get("job_id"))
        try:
            job = _job(row, path.parent.resolve())
        except ValueError as exc:
            problems.append(f"row {number}{f' ({label})' if label else ''}: {exc}")
            continue
        if job.name in first:
            problems.append(f"row {number} ({job.job_id}): same output name {job.name!r} as row {first[job.name]}")
        first.setdefault(job.name, number)
        jobs.append(job)
    if problems:
        raise JobTableError(f"job table {path}:\n  " + "\n  ".join(problems))
    return jobs


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise JobTableError(f"job table {path} not found")
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as handle:
                return [dict(row) for row in csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")]
    except (OSError, ValueError, csv.Error) as exc:
        raise JobTableError(f"cannot read the job table {path}: {exc}") from exc
    raise JobTableError(f"job table {path}: expected a .parquet or .csv file")


def _cell(value: Any) -> str | None:
    """A cell as stripped text; empty cells, None and NaN are ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _count(row: dict[str, Any], column: str, minimum: int) -> int | None:
    """An optional whole-number cell (``3``, ``3.0`` and ``"3"`` are 3)."""
    text = _cell(row.get(column))
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{column} must be a whole number, got {text!r}") from None
    if not number.is_integer() or number < minimum:
        raise ValueError(f"{column} must be a whole number >= {minimum}, got {text!r}")
    return int(number)


def _job(row: dict[str, Any], base: Path) -> Job:
    paths = {column: _cell(row.get(column)) for column in PATH_COLUMNS}
    if paths["portrait"] is None:
        raise ValueError("no portrait")
    if paths["audio"] and paths["source_video"]:
        raise ValueError("give an audio file or a source video, not both")
    if not paths["audio"] and not paths["source_video"]:
        raise ValueError("no audio and no source_video: give one")
    if paths["pose_video"] and paths["source_video"]:
        raise ValueError("pose_video only applies to audio jobs (a reenactment takes the source video's pose)")
    resolved = {column: str((base / Path(text).expanduser()).resolve()) if text else None
                for column, text in paths.items()}
    seed, steps, pose_id = _count(row, "seed", 0), _count(row, "steps", 1), _count(row, "pose_id", 0)
    if pose_id is not None and (paths["source_video"] or paths["pose_video"]):
        raise ValueError("pose_id picks Audio2Pose's head motion: not for a reenactment or a job with a pose_video")
    job_id = _cell(row.get("job_id")) or _derived_id(resolved, seed, steps, pose_id)
    return Job(job_id=job_id, name=safe_id(job_id), seed=seed, steps=steps, pose_id=pose_id, **resolved)


def _derived_id(paths: dict[str, str | None], seed: int | None, steps: int | None, pose_id: int | None) -> str:
    """``<portrait stem>-<audio or video stem>-<hash of the row>``: stable, unique per distinct row
    (a row without ``pose_id`` keeps the id it had before that column existed)."""
    driver = paths["audio"] or paths["source_video"]
    facts = [paths, seed, steps] + ([pose_id] if pose_id is not None else [])
    digest = hashlib.sha1(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:8]
    stems = f"{Path(paths['portrait'] or '').stem}-{Path(driver or '').stem}"
    return safe_id(f"{stems[:80]}-{digest}")
