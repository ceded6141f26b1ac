"""Download stage: one source video per row, shared by all of its clips.

A source is taken from the ``--mirror`` folder when it holds it (by YouTube id or by
the dataset's video name), otherwise downloaded once with yt-dlp into the work area.
A failure is recorded on every clip of that source, with yt-dlp's reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from aniportrait.media.download import DownloadError, download_video, find_in_mirror
from aniportrait.schema import ClipRecord, ClipState
from pipelines.stages.base import describe_error
from pipelines.workarea import WorkArea

log = logging.getLogger(__name__)
STAGE = "download"


@dataclass(frozen=True)
class SourceJob:
    """What is needed to fetch one source video."""

    source_id: str
    url: str | None
    mirror_names: tuple[str, ...]
    max_height: int | None
    with_audio: bool

    @classmethod
    def for_clips(cls, records: list[ClipRecord]) -> SourceJob:
        first = records[0]
        names = tuple(dict.fromkeys(n for r in records for n in r.mirror_names))
        return cls(first.source_id, first.source_url, names, first.max_height,
                   any(r.expect_audio for r in records))


def source_rows(states: list[ClipState]) -> list[dict[str, str]]:
    """Group clip states by source into one Ray row per source (sorted, deterministic)."""
    by_source: dict[str, list[ClipState]] = {}
    for state in states:
        by_source.setdefault(state.record.source_id, []).append(state)
    return [
        {"states": json.dumps([s.to_dict() for s in group], sort_keys=True)}
        for _, group in sorted(by_source.items())
    ]


def clip_rows(row: dict[str, Any]) -> list[dict[str, str]]:
    """Split a source row back into one row per clip."""
    return [ClipState.from_dict(s).to_row() for s in json.loads(row["states"])]


class FetchSource:
    """Resolve (mirror) or download (yt-dlp) the source video of a group of clips."""

    def __init__(self, work_dir: str, mirror: str | None, retries: int, retry_failed: bool = False) -> None:
        self.work = WorkArea(work_dir)
        self.mirror = mirror
        self.retries = retries
        self.retry_failed = retry_failed

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        states = [ClipState.from_dict(s) for s in json.loads(row["states"])]
        job = SourceJob.for_clips([s.record for s in states])
        try:
            path = self.fetch(job)
        except Exception as exc:  # recorded on each clip of the source
            error = describe_error(exc)
            log.warning("source %s failed: %s", job.source_id, error)
            for state in states:
                state.fail(STAGE, error)
                if isinstance(exc, DownloadError):
                    state.info["download_reason"] = exc.reason
        else:
            for state in states:
                state.source_path = path
        return {"states": json.dumps([s.to_dict() for s in states], sort_keys=True)}

    def fetch(self, job: SourceJob) -> str:
        """Local path of the source video; raise ``DownloadError`` when it cannot be had."""
        if self.mirror:
            found = find_in_mirror(self.mirror, job.mirror_names)
            if found is not None:
                return str(found)
        if not job.url:
            raise DownloadError(job.source_id, "not_found_in_mirror",
                                f"not in the mirror as {' or '.join(job.mirror_names) or 'any name'}, and no URL")
        failed = self.work.read_marker(job.source_id, STAGE, "v1", kind="sources")
        if failed is not None and not self.retry_failed:
            raise DownloadError(job.url, failed["reason"], failed["detail"])
        try:
            path = download_video(job.url, self.work.sources_dir, job.source_id, max_height=job.max_height,
                                  with_audio=job.with_audio, retries=self.retries)
        except DownloadError as exc:
            self.work.write_marker(job.source_id, STAGE, "v1", {"reason": exc.reason, "detail": exc.detail},
                                   kind="sources")
            raise
        return str(path)
