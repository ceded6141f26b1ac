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
    """Build the given stages once per actor; run each clip through them in order."""

    def __init__(self, specs: list[tuple[type[ClipStage], dict[str, Any]]]) -> None:
        self.stages = [cls(**kwargs) for cls, kwargs in specs]

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        state = ClipState.from_row(row)
        for stage in self.stages:
            if not state.ok:
                break
            stage.run(state)
        return state.to_row()


def chain_specs(stages: list[ClipStage]) -> list[tuple[type[ClipStage], dict[str, Any]]]:
    """What rebuilds ``stages`` in a Ray actor."""
    return [(type(stage), stage.constructor_kwargs()) for stage in stages]
