"""Download stage: each clip gets its source video, fetched once per source.

The driver resolves what it has at hand itself (:class:`SourcesAtHand`: the mirror, the
``folder`` dataset's videos); :class:`FetchSource` workers take the rest.

A source is taken from the ``--mirror`` folder when it holds it (by YouTube id or by
the dataset's video name), else from an earlier download in the work area, otherwise
downloaded with yt-dlp into the work area (never with ``--no-download``: the clip then
fails with ``not_found_in_mirror``). Rows are per clip (so clips of one source spread over
all workers); a per-source file lock makes the first clip download and the others wait
for and reuse that file. A failure is recorded once per source and given to each of its
clips, with yt-dlp's reason.

Every download first asks the build's download gate (:mod:`aniportrait.media.throttle`,
one named Ray actor for the whole build, started only when some clip needs a download)
and tells it how it ended: the gate spaces the downloads (``--download-rate``), backs
everyone off after a bot check or HTTP 429 (the source is tried again after the
back-off) and, after ``--max-bot-checks`` of them in a row, stops: the clips not fetched
yet are not failed but come out with a ``halt``, and the build stops as on a full disk
(a rerun goes on). Each row's ``metrics`` says where its source came from (``folder``:
read in place, ``mirror``, ``work``: downloaded earlier, ``network``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from aniportrait.ids import contained_join
from aniportrait.media.download import DownloadError, DownloadSettings, download_video, find_in_mirror
from aniportrait.media.throttle import DownloadGate
from aniportrait.reasons import reason_of
from aniportrait.schema import ClipRecord, ClipState
from pipelines.runtime import describe_error
from pipelines.build.stages.chain import HALT_COLUMN, METRICS_COLUMN, clip_metrics
from pipelines.build.workarea import WorkArea

log = logging.getLogger(__name__)
STAGE = "download"
MARKER_VERSION = "v1"
#: Tries of a source that meets a bot check or HTTP 429, each after the gate's back-off.
BOT_CHECK_TRIES = 3
#: Where a clip's source came from, in the order the build summary lists them (``folder``:
#: read where it is, ``--dataset folder``).
ORIGINS = ("folder", "mirror", "work", "network")


class DownloadsStopped(Exception):
    """The gate's circuit breaker is open: this clip's source is not fetched, and not failed."""


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
    """Hold an exclusive lock for one source (across processes on one filesystem): inside
    it no other download of this source runs, so its partial folder is this one's."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(contained_join(str(folder), f"{source_id}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class GateActor:
    """The build's download gate in a named Ray actor (no CPU of its own)."""

    name: str
    handle: Any

    @classmethod
    def start(cls, rate_per_min: float | None, max_bot_checks: int) -> GateActor:
        name = f"aniportrait-download-gate-{uuid.uuid4().hex[:12]}"
        handle = ray.remote(DownloadGate).options(name=name, num_cpus=0).remote(rate_per_min, max_bot_checks)
        return cls(name, handle)

    def stats(self) -> dict[str, Any]:
        """The gate's :meth:`~aniportrait.media.throttle.DownloadGate.stats`."""
        return ray.get(self.handle.stats.remote())

    def stop(self) -> None:
        ray.kill(self.handle)


class BuildGate:
    """The build's download gate, started when a clip first needs the download workers (a
    build whose sources are all in the mirror starts none); ``enabled=False`` (``--no-download``)
    never starts one."""

    def __init__(self, rate_per_min: float | None, max_bot_checks: int, enabled: bool = True) -> None:
        self.rate_per_min = rate_per_min
        self.max_bot_checks = max_bot_checks
        self.enabled = enabled
        self.actor: GateActor | None = None

    def name(self) -> str | None:
        """The gate actor's name for :class:`FetchSource` (``None``: no gate)."""
        if not self.enabled:
            return None
        if self.actor is None:
            self.actor = GateActor.start(self.rate_per_min, self.max_bot_checks)
        return self.actor.name

    def close(self) -> dict[str, Any]:
        """Stop the gate; its :meth:`~aniportrait.media.throttle.DownloadGate.stats` (empty when never started)."""
        if self.actor is None:
            return {}
        stats = self.actor.stats()
        self.actor.stop()
        self.actor = None
        return stats


class _RemoteGate:
    """The build's gate, looked up by name from a download worker and asked synchronously."""

    def __init__(self, name: str) -> None:
        self.actor = ray.get_actor(name)

    def ask(self) -> float | None:
        return ray.get(self.actor.ask.remote())

    def report(self, bot_check: bool) -> bool:
        return ray.get(self.actor.report.remote(bot_check))

    def stop_message(self) -> str:
        return ray.get(self.actor.stop_message.remote())


def fetched_row(state: ClipState, origins: dict[str, str], halt: str = "") -> dict[str, Any]:
    """The row the fetch step hands to the clip stages: the clip, where its source came from,
    and why the downloads stopped (empty while they go on)."""
    return {**state.to_row(), METRICS_COLUMN: json.dumps(clip_metrics(sources=origins)), HALT_COLUMN: halt}


class SourcesAtHand:
    """The sources this process has at hand: ``folder`` videos read where they are
    (``files``: source id -> path) and the files of ``mirror`` (what :class:`FetchSource`
    would find), each source looked up once.

    The driver resolves these itself, so a build from a mirror or a folder starts no
    download workers. (A mirror the driver cannot see, a cluster's, leaves every clip to
    the workers.)
    """

    def __init__(self, mirror: str | None, files: dict[str, str]) -> None:
        self.mirror = mirror
        self.files = files
        self._mirrored: dict[str, Path | None] = {}

    def resolve(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The fetched row of this clip when its source is at hand, else ``None``."""
        state = ClipState.from_row(row)
        source_id = state.record.source_id
        if source_id in self.files:
            state.source_path = self.files[source_id]
            return fetched_row(state, {source_id: "folder"})
        if source_id not in self._mirrored:
            self._mirrored[source_id] = (find_in_mirror(self.mirror, state.record.mirror_names)
                                         if self.mirror else None)
        found = self._mirrored[source_id]
        if found is None:
            return None
        state.source_path = str(found)
        return fetched_row(state, {source_id: "mirror"})


class FetchSource:
    """Resolve (mirror, work area) or download (yt-dlp) the source video of one clip.

    ``gate`` is the name of the build's :class:`GateActor`, or a gate of this process's
    own (default: no rate, the default circuit breaker).
    """

    def __init__(self, work_dir: str, mirror: str | None, retries: int, *, settings: DownloadSettings | None = None,
                 no_download: bool = False, gate: str | DownloadGate | None = None) -> None:
        self.work = WorkArea(work_dir)
        self.mirror = mirror
        self.retries = retries
        self.settings = settings or DownloadSettings()
        self.no_download = no_download
        self.gate = _RemoteGate(gate) if isinstance(gate, str) else gate or DownloadGate()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """A clip row in; the clip row with its source path (or failure), ``metrics`` and ``halt`` out."""
        state = ClipState.from_row(row)
        job = SourceJob.for_clip(state.record)
        origins: dict[str, str] = {}
        halt = ""
        try:
            path, origins[job.source_id] = self.fetch(job)
            state.source_path = str(path)
        except DownloadsStopped as exc:
            halt = str(exc)
        except Exception as exc:  # recorded on the clip; the build goes on
            error = describe_error(exc)
            log.warning("clip %s: source %s failed: %s", state.record.clip_id, job.source_id, error)
            state.fail(STAGE, error, reason_of(exc))
            if isinstance(exc, DownloadError):
                state.info.download_reason = exc.reason
        return fetched_row(state, origins, halt)

    def fetch(self, job: SourceJob) -> tuple[Path, str]:
        """Local path of the source video and where it came from (one of :data:`ORIGINS`);
        raise ``DownloadError`` when it cannot be had, ``DownloadsStopped`` when the gate stopped."""
        if self.mirror:
            found = find_in_mirror(self.mirror, job.mirror_names)
            if found is not None:
                return found, "mirror"
        if self.no_download:
            earlier = find_in_mirror(self.work.sources_dir, [job.source_id])
            if earlier is not None:
                return earlier, "work"
            raise DownloadError(job.url or job.source_id, "not_found_in_mirror",
                                f"not in the mirror as {' or '.join(job.mirror_names) or 'any name'}, and "
                                "--no-download")
        if not job.url:
            raise DownloadError(job.source_id, "not_found_in_mirror",
                                f"not in the mirror as {' or '.join(job.mirror_names) or 'any name'}, and no URL")
        with source_lock(self.work.sources_dir, job.source_id):
            earlier = find_in_mirror(self.work.sources_dir, [job.source_id])
            if earlier is not None:
                return earlier, "work"
            failed = self.work.read_marker(job.source_id, STAGE, MARKER_VERSION, kind="sources")
            if failed is not None:
                raise DownloadError(job.url, failed["reason"], failed["detail"])
            return self._download(job, job.url), "network"

    def _download(self, job: SourceJob, url: str) -> Path:
        """Download through the gate (the caller holds the source's lock); cache a failure,
        unless the gate stopped the downloads."""
        attempt = 1
        while True:
            self._wait_for_turn()
            try:
                path = download_video(url, self.work.sources_dir, job.source_id, max_height=job.max_height,
                                      with_audio=job.with_audio, retries=self.retries, settings=self.settings)
            except DownloadError as exc:
                bot_check = exc.reason == "bot_check"
                if self.gate.report(bot_check) and bot_check:
                    raise DownloadsStopped(self.gate.stop_message()) from exc
                if bot_check and attempt < BOT_CHECK_TRIES:
                    log.warning("source %s met a bot check or HTTP 429 (try %d of %d): trying again after the "
                                "back-off", job.source_id, attempt, BOT_CHECK_TRIES)
                    attempt += 1
                    continue
                self.work.write_marker(job.source_id, STAGE, MARKER_VERSION,
                                       {"reason": exc.reason, "detail": exc.detail}, kind="sources")
                raise
            self.gate.report(False)
            return path

    def _wait_for_turn(self) -> None:
        """Wait until the gate lets a download start; raise ``DownloadsStopped`` when it never will."""
        while (wait := self.gate.ask()) != 0.0:
            if wait is None:
                raise DownloadsStopped(self.gate.stop_message())
            time.sleep(wait)
