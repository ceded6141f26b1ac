"""The trainers' shared loop and checkpoint layout, without a model: format versions, the
version-1 layouts of both trainers, and where a resumed rank's stream starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from pipelines.training.checkpoint import (FORMAT_VERSION, TrainerCheckpoint, checkpoint_path, checkpoint_step,
                                           is_trainer_checkpoint, read_checkpoint, save_checkpoint)
from pipelines.training.loop import Worker, resume_position
from pipelines.training.stream import StreamPosition

CPU = torch.device("cpu")


def _checkpoint(**changes) -> TrainerCheckpoint:
    values = dict(kind="audio2mesh", step=7, models={"audio2mesh": {"in_fn.weight": torch.ones(2, 2)}},
                  optimizer={"state": {}, "param_groups": []}, stream=[{"epoch": 1, "samples": 8}],
                  rng=[{"torch": torch.get_rng_state()}], config={"train": {"steps": 7}, "model": {"hidden": 2}})
    return TrainerCheckpoint(**{**values, **changes})


def test_the_layout_round_trips_through_a_file(tmp_path: Path) -> None:
    checkpoint = _checkpoint(extra={"scaler": None})
    path = save_checkpoint(checkpoint_path(tmp_path, 7), checkpoint.to_dict())
    assert path.name == "step-00000007.pt" and checkpoint_step(path) == 7
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION == 2 and is_trainer_checkpoint(raw)
    back = read_checkpoint(path)
    assert back.kind == "audio2mesh" and back.step == 7 and back.extra == {"scaler": None}
    assert torch.equal(back.models["audio2mesh"]["in_fn.weight"], torch.ones(2, 2))
    assert back.stream == checkpoint.stream and back.config == checkpoint.config
    assert not is_trainer_checkpoint({"in_fn.weight": torch.ones(1)})  # an official state dict


def test_version_1_layouts_convert() -> None:
    weights = {"w": torch.zeros(1)}
    audio = TrainerCheckpoint.from_dict({
        "kind": "audio2pose", "step": 5, "model": weights, "optimizer": {"state": {}}, "stream": [{"epoch": 0,
        "samples": 20}], "rng": [{"torch": torch.get_rng_state()}], "config": {"model": {"layers": 2},
                                                                              "train": {"steps": 5}}})
    assert (audio.kind, audio.step, list(audio.models), audio.extra) == ("audio2pose", 5, ["audio2pose"], {})
    assert audio.config == {"model": {"layers": 2}, "train": {"steps": 5}} and len(audio.rng) == 1
    video = TrainerCheckpoint.from_dict({
        "kind": "lmk2video", "stage": 2, "train_config": {"stage": 2}, "model_config": {"motion_heads": 2},
        "positions": [{"epoch": 3, "samples": 1}, {"epoch": 3, "samples": 2}], "step": 9,
        "modules": {"motion_module": weights}, "optimizer": {"state": {}}, "scaler": None})
    assert (video.kind, video.step, list(video.models), video.rng) == ("lmk2video-stage2", 9, ["motion_module"], [])
    assert video.config == {"train": {"stage": 2}, "model": {"motion_heads": 2}} and video.extra == {"scaler": None}
    assert video.stream == [{"epoch": 3, "samples": 1}, {"epoch": 3, "samples": 2}]


def test_unknown_versions_and_layouts_fail_clearly() -> None:
    with pytest.raises(ValueError, match="x.pt has checkpoint format version 3, but this code reads versions 1 to 2: "
                                         "load it with the aniportrait-data version that wrote it"):
        TrainerCheckpoint.from_dict({**_checkpoint().to_dict(), "format_version": 3}, "x.pt")
    damaged = _checkpoint().to_dict()
    del damaged["rng"]
    with pytest.raises(ValueError, match="damaged version-2 checkpoint: it lacks rng"):
        TrainerCheckpoint.from_dict(damaged)
    with pytest.raises(ValueError, match="neither version-1 layout"):
        TrainerCheckpoint.from_dict({"kind": "audio2mesh", "model": {}})


def test_resume_position_same_or_other_world(caplog: pytest.LogCaptureFixture) -> None:
    saved = [{"epoch": 2, "samples": 12}, {"epoch": 3, "samples": 4}]
    assert resume_position(saved, Worker(1, 2, CPU), "ckpt") == StreamPosition(3, 4)
    with caplog.at_level(logging.WARNING):
        assert resume_position(saved, Worker(0, 3, CPU), "ckpt") == StreamPosition(3, 0)
    assert "written by 2 ranks, this run has 3: data restarts at epoch 3" in caplog.text
    assert resume_position(saved, Worker(2, 4, CPU), "ckpt") == StreamPosition(3, 0)
