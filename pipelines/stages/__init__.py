"""Build stages: one small class per transform, each callable on one Ray Data row."""

from pipelines.stages.base import ClipStage, describe_error
from pipelines.stages.cut import CutClip
from pipelines.stages.face import ExtractFace
from pipelines.stages.fetch import FetchSource
from pipelines.stages.render import RenderPose

__all__ = ["ClipStage", "CutClip", "ExtractFace", "FetchSource", "RenderPose", "describe_error"]
