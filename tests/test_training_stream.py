"""The trainers' shard stream, checkpoints and launcher on the real feature shards."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.training.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint,
                                           local_or_hub, prune_checkpoints, save_checkpoint)
from pipelines.training.distributed import gather_objects, rank_and_world, run_training
from pipelines.training.stream import ShardStream, StreamPosition, batches, expand_shards

WINDOW = 10
MEMBERS = {"has_face.npy"}


def frame_windows(sample: dict) -> list[dict]:
    """Every non-overlapping 10-frame window of a clip, named by clip and start frame."""
    frames = len(np.load(io.BytesIO(sample["has_face.npy"])))
    return [{"clip": sample["__key__"], "start": start, "frames": np.arange(start, start + WINDOW)}
            for start in range(0, frames - WINDOW + 1, WINDOW)]


def ids(items) -> list[tuple[str, int]]:
    return [(item["clip"], int(item["start"])) for item in items]


def stream(shards: list[str], **kw) -> ShardStream:
    kw = {"seed": 3, "shuffle_buffer": 6, "epochs": 1, "members": MEMBERS, **kw}
    return ShardStream(shards, frame_windows, **kw)


@pytest.fixture(scope="module")
def shards(feature_shards: Path) -> list[str]:
    return expand_shards(str(feature_shards))


@pytest.fixture(scope="module")
def all_windows(shards: list[str]) -> set[tuple[str, int]]:
    """The 27 windows of the sample (90 + 120 + 60 frames), read without shuffling."""
    return set(ids(stream(shards, shuffle_buffer=1)))


def test_expand_shards(feature_shards: Path, shards: list[str], tmp_path: Path) -> None:
    tar = feature_shards / "sample-train-000000.tar"
    assert shards == [str(tar)]  # from release.json
    assert expand_shards(str(feature_shards / "*.tar")) == [str(tar)]
    (tmp_path / "b.tar").symlink_to(tar)
    (tmp_path / "a.tar").symlink_to(tar)
    assert expand_shards(tmp_path) == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    assert expand_shards(f"{tmp_path}/{{b,a}}.tar::{tar}") == [str(tmp_path / "b.tar"), str(tmp_path / "a.tar"),
                                                               str(tar)]
    assert expand_shards(["s3://bucket/x-{0..1}.tar"]) == ["s3://bucket/x-0.tar", "s3://bucket/x-1.tar"]
    with pytest.raises(ValueError, match="no shards"):
        expand_shards(str(tmp_path / "none-*.tar"))


def test_relative_paths_survive_a_change_of_folder(feature_shards: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray Train runs each worker in a trial folder of its own.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.tar").symlink_to(feature_shards / "sample-train-000000.tar")
    (tmp_path / "vae").mkdir()
    monkeypatch.chdir(tmp_path)
    specs = ["data", "data/*.tar", "data/{a,a}.tar", "./data/a.tar::s3://bucket/x.tar"]
    expanded = [expand_shards(spec) for spec in specs]
    weights = [local_or_hub(v) for v in ("vae", "org/hub-model", None)]
    monkeypatch.chdir(feature_shards)
    local = str(tmp_path / "data" / "a.tar")
    assert expanded == [[local], [local], [local, local], [local, "s3://bucket/x.tar"]]
    assert all(Path(p).exists() for p in expanded[0] + expanded[1])
    assert weights == [str((tmp_path / "vae").resolve()), "org/hub-model", None]


def test_same_seed_same_order_and_epochs_differ(shards: list[str], all_windows: set) -> None:
    assert len(all_windows) == 27
    first = ids(stream(shards, epochs=2))
    assert first == ids(stream(shards, epochs=2))
    epoch0, epoch1 = first[:27], first[27:]
    assert set(epoch0) == set(epoch1) == all_windows
    assert epoch0 != epoch1  # reshuffled each epoch
    assert ids(stream(shards, seed=4)) != epoch0


def test_ranks_and_workers_are_disjoint_and_complete(shards: list[str], all_windows: set) -> None:
    # One shard: ranks (and workers) share it by sample.
    per_rank = [ids(stream(shards, rank=r, world_size=2, num_workers=w)) for r, w in ((0, 0), (1, 2))]
    assert all(per_rank)
    assert not set(per_rank[0]) & set(per_rank[1])
    assert set(per_rank[0]) | set(per_rank[1]) == all_windows
    assert len(per_rank[0]) + len(per_rank[1]) == 27
    # Two shard names (the same file twice), two ranks: split by shard, each rank reads one.
    two = stream(shards * 2, rank=1, world_size=2)
    assert two.split_by_shard and sorted(ids(two)) == sorted(all_windows)


def test_resume_mid_epoch_continues_identically(shards: list[str]) -> None:
    for workers in (0, 2):
        straight = stream(shards, epochs=2, num_workers=workers)
        items = iter(straight)
        head = [next(items) for _ in range(31)]
        position = straight.position
        assert position == StreamPosition(epoch=1, samples=4)
        tail = list(items)
        resumed = stream(shards, epochs=2, num_workers=workers, position=StreamPosition.from_dict(position.to_dict()))
        assert ids(resumed) == ids(tail)
        assert len(head) + len(tail) == 54


def test_batches_collate_items(shards: list[str]) -> None:
    got = list(batches(stream(shards), 8))
    assert [len(b["start"]) for b in got] == [8, 8, 8, 3]
    assert got[0]["frames"].shape == (8, WINDOW) and got[0]["frames"].dtype == torch.int64


def test_checkpoints_atomic_latest_and_prune(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 100, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step, "w": torch.full((2,), float(step)),
                                                          "stream": [StreamPosition(1, step).to_dict()]})
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 100)
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 100 and torch.equal(state["w"], torch.full((2,), 100.0))
    assert StreamPosition.from_dict(state["stream"][0]) == StreamPosition(1, 100)
    assert not list(tmp_path.glob("checkpoints/.*"))  # no temporaries left
    assert prune_checkpoints(tmp_path, keep=2) == [checkpoint_path(tmp_path, 5)]
    assert list_checkpoints(tmp_path) == [checkpoint_path(tmp_path, 20), checkpoint_path(tmp_path, 100)]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for step in (10, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    newest = checkpoint_path(tmp_path, 20)
    newest.write_bytes(newest.read_bytes()[:10])  # cut short, as a crash before the data reached the disk
    with caplog.at_level("WARNING"):
        found = latest_checkpoint(tmp_path)
    assert found == checkpoint_path(tmp_path, 10) and load_checkpoint(found)["step"] == 10
    assert newest.name in caplog.text
    checkpoint_path(tmp_path, 10).write_bytes(b"")
    assert latest_checkpoint(tmp_path) is None


def record_rank(config: dict) -> None:
    """A loop that writes what the launcher told it."""
    rank, world = rank_and_world()
    Path(config["out"], f"rank{rank}.txt").write_text(f"{world} {gather_objects(rank)}")


def test_run_training_in_process(tmp_path: Path) -> None:
    run_training(record_rank, {"out": str(tmp_path)}, workers=1, use_gpu=False)
    assert (tmp_path / "rank0.txt").read_text() == "1 [0]"


def test_stream_leaves_the_global_torch_rng_alone(shards: list[str]) -> None:
    """A trainer's dropout masks must not depend on where epochs start (resume)."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert len(ids(stream(shards, epochs=2, num_workers=1))) == 54
    assert torch.equal(torch.rand(3), expected)


def test_batches_collated_in_workers_count_items_and_resume(shards: list[str], all_windows: set) -> None:
    def flat(batches_: list) -> list[tuple[str, int]]:
        return [(clip, int(start)) for b in batches_ for clip, start in zip(b["clip"], b["start"])]

    straight = stream(shards, epochs=2, num_workers=2, batch_size=5)
    items = iter(straight)
    head = [next(items) for _ in range(3)]
    assert head[0]["frames"].shape == (5, WINDOW)
    position = straight.position
    assert position == StreamPosition(0, 15)
    tail = list(items)
    assert set(flat(head + tail)[:27]) == all_windows  # each worker's last batch of the epoch may be short
    resumed = stream(shards, epochs=2, num_workers=2, batch_size=5, position=position)
    assert flat(resumed) == flat(tail)
