"""Run several per-clip stages one after another inside one Ray actor.

Each Ray Data actor pool holds its CPUs for the whole run, so one pool per stage on a
small cluster deadlocks (the later pools' idle actors hold the CPUs the earlier stages
wait for). One pool running the chain per clip avoids that, moves no data between
actors and keeps a clip's work-area files on the node that made them. The stages stay
separate classes with their own caches and markers.
"""

from __future__ import annotations

from typing import Any

from aniportrait.schema import ClipState
from pipelines.stages.base import ClipStage


class StageChain:
    """Build the given stages once per actor; run each batch of clips through them in order.

    A stage gets the batch's clips that are still ok, so a stage that batches (wav2vec2
    on a GPU) can; the others process them one by one.
    """

    def __init__(self, specs: list[tuple[type[ClipStage], dict[str, Any]]]) -> None:
        self.stages = [cls(**kwargs) for cls, kwargs in specs]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """A Ray Data batch of clip rows (column ``state``) through every stage in order."""
        states = [ClipState.from_row({"state": text}) for text in batch["state"]]
        for stage in self.stages:
            stage.run_batch([s for s in states if s.ok])
        return {"state": [s.to_row()["state"] for s in states]}


def chain_specs(stages: list[ClipStage]) -> list[tuple[type[ClipStage], dict[str, Any]]]:
    """What rebuilds ``stages`` in a Ray actor."""
    return [(type(stage), stage.constructor_kwargs()) for stage in stages]
