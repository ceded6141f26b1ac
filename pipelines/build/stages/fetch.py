"""Download stage: each clip gets its source video, fetched once per source.

A source is taken from the ``--mirror`` folder when it holds it (by YouTube id or by
the dataset's video name), otherwise downloaded with yt-dlp into the work area. Rows are
per clip (so clips of one source spread over all workers); a per-source file lock makes
the first clip download and the others wait for and reuse that file. A failure is
recorded once per source and given to each of its clips, with yt-dlp's reason.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aniportrait.ids import contained_join
from aniportrait.media.download import DownloadError, download_video, find_in_mirror
from aniportrait.reasons import reason_of
from aniportrait.schema import ClipRecord, ClipState
from pipelines.runtime import describe_error
from pipelines.build.workarea import WorkArea

log = logging.getLogger(__name__)
STAGE = "download"
MARKER_VERSION = "v1"


@dataclass(frozen=True)
class SourceJob:
    """What is needed to fetch one source video."""

    source_id: str
    url: str | None
    mirror_names: tuple[str, ...]
    max_height: int | None
    with_audio: bool

    @classmethod
    def for_clip(cls, record: ClipRecord) -> SourceJob:
        return cls(record.source_id, record.source_url, record.mirror_names, record.max_height, record.expect_audio)


@contextmanager
def source_lock(folder: Path, source_id: str) -> Iterator[None]:
    """Hold an exclusive lock for one source (across processes on one filesystem).

    Inside the lock no other download of this source can run, so temporary folders of
    an earlier, killed download are removed first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(contained_join(str(folder), f"{source_id}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for stale in folder.glob(f".tmp-{source_id}-*"):  # left by a killed download
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FetchSource:
    """Resolve (mirror) or download (yt-dlp) the source video of one clip."""

    def __init__(self, work_dir: str, mirror: str | None, retries: int) -> None:
        self.work = WorkArea(work_dir)
        self.mirror = mirror
        self.retries = retries

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        state = ClipState.from_row(row)
        job = SourceJob.for_clip(state.record)
        try:
            state.source_path = self.fetch(job)
        except Exception as exc:  # recorded on the clip; the build goes on
            error = describe_error(exc)
            log.warning("clip %s: source %s failed: %s", state.record.clip_id, job.source_id, error)
            state.fail(STAGE, error, reason_of(exc))
            if isinstance(exc, DownloadError):
                state.info["download_reason"] = exc.reason
        return state.to_row()

    def fetch(self, job: SourceJob) -> str:
        """Local path of the source video; raise ``DownloadError`` when it cannot be had."""
        if self.mirror:
            found = find_in_mirror(self.mirror, job.mirror_names)
            if found is not None:
                return str(found)
        if not job.url:
            raise DownloadError(job.source_id, "not_found_in_mirror",
                                f"not in the mirror as {' or '.join(job.mirror_names) or 'any name'}, and no URL")
        with source_lock(self.work.sources_dir, job.source_id):
            failed = self.work.read_marker(job.source_id, STAGE, MARKER_VERSION, kind="sources")
            if failed is not None:
                raise DownloadError(job.url, failed["reason"], failed["detail"])
            try:
                path = download_video(job.url, self.work.sources_dir, job.source_id, max_height=job.max_height,
                                      with_audio=job.with_audio, retries=self.retries)
            except DownloadError as exc:
                self.work.write_marker(job.source_id, STAGE, MARKER_VERSION,
                                       {"reason": exc.reason, "detail": exc.detail}, kind="sources")
                raise
        return str(path)
