"""The contract every per-clip stage follows: cache, run, record errors, write a marker."""

from __future__ import annotations

import logging
from typing import Any

from aniportrait.reasons import reason_of
from aniportrait.schema import ClipState
from aniportrait.storage import OutputError
from pipelines.build.config import config_hash
from pipelines.runtime import describe_error, is_disk_full
from pipelines.build.workarea import WorkArea

log = logging.getLogger(__name__)


def is_clips_fault(exc: BaseException) -> bool:
    """Whether ``exc`` belongs to the clip (recorded on it) rather than to the machine (a
    full disk) or to the remote work area (an :class:`OutputError`: network, credentials)."""
    return not (is_disk_full(exc) or isinstance(exc, OutputError))


class ClipStage:
    """Base of per-clip stages.

    Subclasses set ``name`` and implement :meth:`process`, which reads and updates a
    :class:`ClipState` (outputs into the clip's work folder), and
    :meth:`constructor_kwargs`, which rebuilds the stage in a Ray actor. :meth:`run`
    reuses a finished result whose settings hash matches (resume), records any error on
    the clip instead of raising (except a full disk: :func:`is_disk_full`), and writes
    the done marker last.
    ``upstream_hash`` chains the hash of the previous stage, so a change early in the
    chain invalidates everything after it.
    """

    name = "stage"
    version = 1
    #: Ask Ray for a GPU per actor when the cluster has GPUs.
    uses_gpu = False

    def __init__(self, work_dir: str, settings: dict[str, Any], upstream_hash: str = "") -> None:
        self.work = WorkArea(work_dir)
        self.settings = settings
        self.upstream_hash = upstream_hash
        self.stage_hash = config_hash(
            {"stage": self.name, "version": self.version, "settings": settings, "upstream": upstream_hash}
        )

    def run(self, state: ClipState) -> ClipState:
        """Process ``state`` in place, or restore it from a finished marker."""
        if self.restore(state):
            return state
        self.work.clear_temporaries(state.record.clip_id)
        try:
            self.process(state)
        except Exception as exc:  # recorded per clip; the build goes on with the others
            if not is_clips_fault(exc):
                raise  # the machine's or the store's fault: no marker, so a rerun retries the clip
            self.record_failure(state, exc)
        self.write_marker(state)
        return state

    def run_batch(self, states: list[ClipState]) -> None:
        """Process several clips; stages that gain from batching override this."""
        for state in states:
            self.run(state)

    def restore(self, state: ClipState) -> bool:
        """Fill ``state`` from a finished marker of this stage; False when there is none."""
        cached = self.cached_state(state)
        if cached is None:
            return False
        state.status, state.error, state.failed_stage, state.reason = (cached.status, cached.error,
                                                                       cached.failed_stage, cached.reason)
        state.outputs, state.info = cached.outputs, cached.info
        state.cached_stages.append(self.name)
        return True

    def record_failure(self, state: ClipState, exc: Exception) -> None:
        log.warning("clip %s failed in %s: %s", state.record.clip_id, self.name, exc)
        state.fail(self.name, describe_error(exc), reason_of(exc))

    def write_marker(self, state: ClipState) -> None:
        """The done marker (this stage's result for the clip), written last: into a remote
        work area after the clip's output files it does not hold yet."""
        payload = state.to_dict()
        payload.pop("cached_stages")
        payload.pop("source_path")
        self.work.write_marker(state.record.clip_id, self.name, self.stage_hash, payload,
                               files=state.outputs.values())

    def cached_state(self, state: ClipState) -> ClipState | None:
        """The finished state for this clip, if its marker matches settings and record."""
        payload = self.work.read_marker(state.record.clip_id, self.name, self.stage_hash)
        if payload is None or payload.get("record") != state.record.to_dict():
            return None
        return ClipState.from_dict(payload)

    def model_info(self) -> dict[str, str]:
        """Identity of the model the stage runs (recorded in ``release.json``), if any."""
        return {}

    def constructor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this stage in a Ray actor."""
        raise NotImplementedError

    def process(self, state: ClipState) -> None:
        raise NotImplementedError
