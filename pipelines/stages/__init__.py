"""Build stages: one small class per transform, each callable on one Ray Data row."""

from pipelines.stages.base import ClipStage, describe_error
from pipelines.stages.cut import CutClip
from pipelines.stages.fetch import FetchSource

__all__ = ["ClipStage", "CutClip", "FetchSource", "describe_error"]
