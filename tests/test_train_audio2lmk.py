"""Audio2Mesh / Audio2Pose training on the real feature shards: windows, overfitting,
exact resume (also from a checkpoint of the layout before format versions), two Ray Train
workers, the CLI and the checkpoint as a model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from aniportrait.face import neutral_frame
from aniportrait.pose import matrix_to_pose6d, relative_poses
from pipelines.training.audio2lmk import Audio2LmkTrainConfig, train
from pipelines.training.checkpoint import latest_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from pipelines.training.windows import LIP_VERTICES, MEMBERS, Audio2LmkWindows, identity_index

SHORT_FRAMES = 24


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def samples(feature_shards: Path) -> dict[str, dict]:
    """The three clips of the sample shard, as webdataset reads them."""
    return {s["__key__"]: s for s in wds.WebDataset(str(feature_shards / "sample-train-000000.tar"), shardshuffle=False)}


@pytest.fixture(scope="module")
def short_shard(samples: dict[str, dict], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shard of one clip cut to its first 24 frames: three 8-frame windows to overfit."""
    clip = samples["Radio10_0"]
    path = tmp_path_factory.mktemp("short") / "short-000000.tar"
    with wds.TarWriter(str(path)) as writer:
        writer.write({"__key__": clip["__key__"], "json": clip["json"],
                      **{m: npy(np.load(io.BytesIO(clip[m]))[:SHORT_FRAMES]) for m in MEMBERS - {"json"}}})
    return str(path)


def config(kind: str, shards: list[str], out: Path, **kw) -> Audio2LmkTrainConfig:
    base = {"steps": 4, "batch_size": 4, "window": 30, "lr": 3e-3, "shuffle_buffer": 4, "checkpoint_every": 1000,
            "log_every": 1, "progress": False, "threads": 1}
    return Audio2LmkTrainConfig(kind=kind, shards=shards, out=str(out), **{**base, **kw})


def test_windows_targets(samples: dict[str, dict]) -> None:
    clip = samples["LylTalking_1"]
    windows = Audio2LmkWindows(window=50, stride=40)(clip)
    # 120 frames: starts 0, 40, 80 (80..120 is 40 frames >= 25: kept, padded and masked)
    assert [w["start"] for w in windows] == [0, 40, 80]
    lmks3d = np.load(io.BytesIO(clip["lmks3d.npy"]))
    mats = np.load(io.BytesIO(clip["trans_mat.npy"])).astype(np.float64)
    has_face = np.load(io.BytesIO(clip["has_face.npy"]))
    reference = neutral_frame(has_face, np.load(io.BytesIO(clip["blendshapes.npy"])))
    for w in windows:
        start, valid = w["start"], int(w["mask"].sum())
        np.testing.assert_allclose(w["mesh_offset"][:valid], lmks3d[start:start + valid] - lmks3d[reference], atol=1e-6)
        np.testing.assert_allclose(w["pose"][:valid], matrix_to_pose6d(relative_poses(mats[start:start + valid])),
                                   atol=1e-4)
        np.testing.assert_array_equal(w["features"][:valid], np.load(io.BytesIO(clip["wav2vec.npy"]))[start:start + valid])
        assert w["features"].dtype == np.float32 and w["features"].shape == (50, 32)
    assert np.abs(windows[0]["pose"][0]).max() < 1e-6  # relative to the window's first frame
    assert windows[-1]["mask"].sum() == 40 and not windows[-1]["mesh_offset"][40:].any()
    record = json.loads(clip["json"])["record"]
    assert windows[0]["id_index"] == identity_index(record["source_id"]) == identity_index("LylTalking")
    assert 0 <= identity_index("Radio10") < 100
    assert len(LIP_VERTICES) == 40 and {61, 291, 0, 17, 13, 14} <= set(LIP_VERTICES)


def test_windows_fill_pose_gaps_for_teacher_forcing(samples: dict[str, dict]) -> None:
    clip = dict(samples["Radio10_0"])
    has_face = np.load(io.BytesIO(clip["has_face.npy"])).astype(bool)
    assert has_face[:20].all()
    has_face[5:8] = False  # a 3-frame gap
    clip["has_face.npy"] = npy(has_face)
    window = Audio2LmkWindows(window=20)(clip)[0]
    mats = np.load(io.BytesIO(clip["trans_mat.npy"])).astype(np.float64)
    before, after = matrix_to_pose6d(relative_poses(mats[[0, 4, 8]]))[1:]
    np.testing.assert_array_equal(window["mask"][4:9], [1, 0, 0, 0, 1])
    for k, frame in enumerate(range(5, 8), start=1):  # linear between frames 4 and 8, not a zero pose
        np.testing.assert_allclose(window["pose"][frame], before + (after - before) * k / 4, atol=1e-4)


def test_num_ids_override_reaches_the_data(samples: dict[str, dict], feature_shards: Path, tmp_path: Path) -> None:
    for clip in samples.values():
        source = json.loads(clip["json"])["record"]["source_id"]
        assert {w["id_index"] for w in Audio2LmkWindows(window=30, num_ids=7)(clip)} == {identity_index(source, 7)}
    assert max(identity_index("LylTalking"), identity_index("Radio10")) >= 3  # out of range for 3 rows
    cfg = config("audio2pose", [str(feature_shards)], tmp_path, steps=2, window=10, checkpoint_every=2,
                 eval_shards=[str(feature_shards)], eval_windows=4, model_overrides={"num_ids": 3})
    result = train(cfg)
    assert result.step == 2 and "l1" in result.eval
    assert read_checkpoint(result.checkpoint).models["audio2pose"]["id_embed.weight"].shape[0] == 3


@pytest.mark.parametrize("kind, steps", [("audio2mesh", 80), ("audio2pose", 60)])
def test_tiny_model_overfits_a_few_windows(kind: str, steps: int, short_shard: str, tmp_path: Path) -> None:
    cfg = config(kind, [short_shard], tmp_path, steps=steps, window=8, batch_size=3, lr=1e-2 if kind == "audio2mesh"
                 else 3e-3, shuffle_buffer=1, weight_decay=0.0, model_overrides={"dropout": 0.0} if kind == "audio2pose"
                 else {}, eval_shards=[short_shard], checkpoint_every=steps)
    result = train(cfg)
    first, last = result.losses[0][1], result.losses[-1][1]
    assert len(result.losses) == steps and first / last > 5, result.losses
    assert result.step == steps and result.checkpoint == latest_checkpoint(tmp_path)
    assert result.eval["l1"] < first / 3  # on the same windows, after training
    if kind == "audio2mesh":
        assert 0 < result.eval["mean_vertex_error"] < result.eval["lip_vertex_error"]
    else:
        assert result.eval["rotation_error_deg"] >= 0 and result.eval["translation_error"] >= 0


def test_resume_continues_the_same_loss_curve(feature_shards: Path, tmp_path: Path) -> None:
    # audio2pose with dropout: the same curve also needs the restored rng state.
    # 10-frame windows: 27 per epoch (90 + 120 + 60 frames); 4 per step.
    run = {"window": 10, "checkpoint_every": 5}
    straight = train(config("audio2pose", [str(feature_shards)], tmp_path / "straight", steps=10, **run))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(config("audio2pose", [str(feature_shards)], tmp_path / "straight", steps=10, **run))
    split = tmp_path / "split"
    train(config("audio2pose", [str(feature_shards)], split, steps=5, **run))
    raw = load_checkpoint(latest_checkpoint(split))
    assert raw["format_version"] == 2 and set(raw) == {"format_version", "kind", "step", "models", "optimizer",
                                                        "stream", "rng", "config", "extra"}
    state = read_checkpoint(latest_checkpoint(split))
    assert state.kind == "audio2pose" and list(state.models) == ["audio2pose"] and state.extra == {}
    assert state.step == 5 and state.stream == [{"epoch": 0, "samples": 20}]  # mid-epoch
    assert state.config["train"]["steps"] == 5 and state.config["model"]["wav2vec2"] is None
    resumed = train(config("audio2pose", [str(feature_shards)], split, steps=10, resume=True, **run))
    assert [s for s, _ in resumed.losses] == list(range(1, 11))
    np.testing.assert_allclose([l for _, l in resumed.losses], [l for _, l in straight.losses], rtol=1e-5)
    final = read_checkpoint(resumed.checkpoint)
    assert final.stream == [{"epoch": 1, "samples": 12}]  # 7 batches (27 windows), then 3 of epoch 1
    for name, tensor in read_checkpoint(straight.checkpoint).models["audio2pose"].items():
        torch.testing.assert_close(final.models["audio2pose"][name], tensor, rtol=1e-5, atol=1e-6)

    # A step-5 checkpoint as the trainer wrote it before format versions resumes the same way.
    old = tmp_path / "version1"
    (old / "checkpoints").mkdir(parents=True)
    (old / "train.csv").write_text((split / "train.csv").read_text())
    tiny_pose = {"audio_dim": 32, "hidden": 32, "heads": 2, "layers": 2, "ffn": 64, "num_ids": 100, "max_len": 600,
                 "pose_dim": 6, "dropout": 0.1, "wav2vec2": None}  # dataclasses.asdict of that code's Audio2PoseConfig
    save_checkpoint(old / "checkpoints" / "step-00000005.pt", {
        "kind": state.kind, "step": state.step, "model": state.models["audio2pose"], "optimizer": state.optimizer,
        "stream": state.stream, "rng": state.rng, "config": {"model": tiny_pose, "train": state.config["train"]}})
    from_v1 = train(config("audio2pose", [str(feature_shards)], old, steps=10, resume=True, **run))
    np.testing.assert_allclose([l for _, l in from_v1.losses], [l for _, l in straight.losses], rtol=1e-5)
    with pytest.raises(ValueError, match="another model config"):
        train(config("audio2pose", [str(feature_shards)], old, steps=12, resume=True,
                     model_overrides={"layers": 1}, **run))
    with pytest.raises(ValueError, match="is a audio2pose checkpoint, not audio2mesh"):
        train(config("audio2mesh", [str(feature_shards)], old, steps=12, resume=True, **run))


@pytest.mark.slow
def test_two_ray_train_workers(feature_shards: Path, local_ray: None, tmp_path: Path) -> None:
    result = train(config("audio2mesh", [str(feature_shards)], tmp_path, steps=3, workers=2, window=10))
    state = read_checkpoint(result.checkpoint)
    assert result.step == 3 and len(result.losses) == 3
    positions = state.stream
    # The one shard is shared by sample (rank 0: 2 clips, 15 windows; rank 1: 1 clip, 12): 3 batches of 4 each.
    assert len(positions) == 2 and all(p["samples"] == 12 and p["epoch"] == 0 for p in positions)
    assert len(state.rng) == 2 and not torch.equal(state.rng[0]["torch"], state.rng[1]["torch"])


def test_cli_trains_and_the_checkpoint_loads_as_a_model(feature_shards: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app
    from pipelines.inference.audio2lmk import load_audio_model

    out = tmp_path / "run"
    args = ["train", "audio2mesh", "--shards", str(feature_shards), "--out", str(out), "--steps", "2",
            "--batch-size", "2", "--window", "20", "--config", "tiny", "--loader-workers", "0", "--threads", "1",
            "--eval-shards", str(feature_shards)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "step 2" in done.output and "eval lip_vertex_error" in done.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    wrong = CliRunner().invoke(app, ["train", "audio2pose", "--shards", str(feature_shards), "--out",
                                     str(tmp_path / "official"), "--steps", "1"])
    assert wrong.exit_code == 2 and "768-d" in wrong.output and "32-d" in wrong.output
    model, conventions = load_audio_model(latest_checkpoint(out), "audio2mesh")
    assert conventions == {}  # Audio2Mesh has none
    weights = read_checkpoint(latest_checkpoint(out)).models["audio2mesh"]
    features = torch.randn(1, 20, 32)
    expected = torch.nn.functional.linear(torch.nn.functional.linear(features, weights["in_fn.weight"],
                                                                     weights["in_fn.bias"]),
                                          weights["out_fn.weight"], weights["out_fn.bias"])
    torch.testing.assert_close(model.head(features).reshape(1, 20, -1), expected)
    assert (out / "train.csv").read_text().splitlines()[0].startswith("step,epoch,loss")
    assert list((out / "tb").iterdir())  # TensorBoard events
