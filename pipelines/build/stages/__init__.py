"""Build stages: one small class per transform; `StageChain` runs them per clip in a Ray actor.

Import the stages from their modules (``pipelines.build.stages.face`` ...): this package imports
none of them, so a process that needs one stage (a download actor) does not load the
others' libraries (scipy, OpenCV).
"""
