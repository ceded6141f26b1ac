"""Build stages: one small class per transform; `StageChain` runs them per clip in a Ray actor."""

from pipelines.stages.audio import AudioFeatures
from pipelines.stages.base import ClipStage, describe_error
from pipelines.stages.cut import CutClip
from pipelines.stages.face import ExtractFace
from pipelines.stages.fetch import FetchSource
from pipelines.stages.quality import FilterClips, FixSync, ScoreQuality
from pipelines.stages.render import RenderPose

__all__ = ["AudioFeatures", "ClipStage", "CutClip", "ExtractFace", "FetchSource", "FilterClips", "FixSync", "RenderPose",
           "ScoreQuality", "describe_error"]
