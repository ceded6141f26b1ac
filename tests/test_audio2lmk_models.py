"""Audio2Mesh / Audio2Pose: official state dicts, save_pretrained round trips, heads on cached shard
features, the teacher-forced training forward, generation lengths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.audio2mesh import Audio2MeshModel  # noqa: E402
from models.audio2pose import (  # noqa: E402
    Audio2PoseModel,
    alibi_causal_mask,
    alibi_slopes,
    chunk_bounds,
    own_frame_mask,
    shift_poses,
)

OFFICIAL = {"audio2mesh": Audio2MeshModel, "audio2pose": Audio2PoseModel}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manifest(shared_dir: Path, name: str) -> dict:
    return json.loads((shared_dir / "official_checkpoints" / f"{name}.pt.json").read_text())


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_state_dict_loads_strictly(shared_dir: Path, name: str) -> None:
    """Keys (in order), shapes and parameter count equal the official manifest; a state built
    from it loads with strict=True (meta tensors: no 400 MB of random weights)."""
    model_cls = OFFICIAL[name]
    expected = manifest(shared_dir, name)
    with torch.device("meta"):
        model = model_cls(**model_cls.official_config())
    state = model.state_dict()
    assert list(state) == list(expected["state_dict"])
    assert {k: list(v.shape) for k, v in state.items()} == {k: v[:-1] for k, v in expected["state_dict"].items()}
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]
    assert sum(v.numel() for v in state.values()) == expected["num_state_dict_elements"]
    official = {k: torch.empty(v[:-1], dtype=getattr(torch, v[-1]), device="meta")
                for k, v in expected["state_dict"].items()}
    result = model.load_state_dict(official, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_load_official_file_both_weight_norm_namings(tmp_path: Path, name: str, caplog) -> None:
    """A saved official-style file loads value for value, whether the positional conv's weight
    norm is named weight_g/weight_v (torch 2.0) or parametrizations.* (newer torch); a file
    missing a key fails naming it, or without strict loads the rest with a warning."""
    model_cls = OFFICIAL[name]
    tiny = model_cls.tiny_config()
    torch.manual_seed(1)
    source = model_cls(**tiny)
    state = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    assert "audio_encoder.encoder.pos_conv_embed.conv.weight_g" in state
    renamed = {k.replace("conv.weight_g", "conv.parametrizations.weight.original0")
                .replace("conv.weight_v", "conv.parametrizations.weight.original1"): v for k, v in state.items()}
    for variant, contents in (("classic", state), ("parametrized", renamed)):
        path = tmp_path / f"{variant}.pt"
        torch.save(contents, path)
        loaded = model_cls.load_official(path, tiny)
        assert loaded.state_dict().keys() == state.keys()
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, state[key]), (variant, key)
    broken = dict(state)
    broken.pop("in_fn.bias")
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"broken.pt: .*1 missing, e.g. \['in_fn.bias'\]"):
        model_cls.load_official(tmp_path / "broken.pt", tiny)
    lenient = model_cls.load_official(tmp_path / "broken.pt", tiny, strict=False)
    assert "1 missing" in caplog.text and torch.equal(lenient.in_fn.weight, state["in_fn.weight"])
    torch.save({**state, "in_fn.bias": torch.zeros(3)}, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match="1 of another shape"):
        model_cls.load_official(tmp_path / "shape.pt", tiny, strict=False)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
@pytest.mark.parametrize("inside", [True, False], ids=["with-wav2vec2", "head-only"])
def test_save_pretrained_round_trip(tmp_path: Path, name: str, inside: bool) -> None:
    """save_pretrained/from_pretrained give the same config, keys (official names: weight_g/weight_v)
    and values; a wav2vec2 attached later is part of the saved config."""
    model_cls = OFFICIAL[name]
    config = {**model_cls.tiny_config(), **({} if inside else {"wav2vec2": None})}
    torch.manual_seed(2)
    model = model_cls(**config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)  # out_fn is zero-initialised: the round trip must carry it
    model.save_pretrained(tmp_path / "saved")
    loaded = model_cls.from_pretrained(tmp_path / "saved")
    assert type(loaded) is model_cls and not loaded.training
    assert {k: loaded.config[k] for k in config} == json.loads(json.dumps(config))
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert ("audio_encoder.encoder.pos_conv_embed.conv.weight_g" in loaded.state_dict()) == inside
    if not inside:
        from models.wav2vec import AudioEncoder

        loaded.set_audio_encoder(AudioEncoder.from_config_dict(model_cls.tiny_config()["wav2vec2"]))
        loaded.save_pretrained(tmp_path / "attached")
        again = model_cls.from_pretrained(tmp_path / "attached")
        assert again.audio_encoder is not None and again.config.wav2vec2 == loaded.config.wav2vec2


def test_audio_encoder_matches_cached_features(tiny_wav2vec2: Path, media_dir: Path) -> None:
    """The encoder inside the models gives the features the build caches as wav2vec.npy."""
    from aniportrait.audio import Wav2Vec2Features, frame_count, load_audio, normalize
    from models.wav2vec import load_audio_encoder

    wave = normalize(load_audio(media_dir / "speech_lyl.wav")[:32000])
    frames = frame_count(len(wave), 30)
    cached = Wav2Vec2Features(str(tiny_wav2vec2))(wave, frames)
    encoder = load_audio_encoder(str(tiny_wav2vec2))
    with torch.no_grad():
        ours = encoder(torch.from_numpy(wave)[None], frames)[0].numpy()
    assert ours.shape == cached.shape == (60, 32)
    np.testing.assert_allclose(ours, cached, atol=1e-5)
    assert encoder.min_samples == 400
    assert not any(p.requires_grad for p in encoder.feature_extractor.parameters())


def test_missing_wav2vec2_says_what_to_pass(tmp_path: Path) -> None:
    from aniportrait.audio import ModelLoadError
    from models.wav2vec import load_audio_encoder

    with pytest.raises(ModelLoadError, match="--wav2vec2"):
        load_audio_encoder(str(tmp_path / "nowhere"))


def test_alibi_and_cross_attention_masks() -> None:
    assert alibi_slopes(8) == [0.5 ** i for i in range(1, 9)]
    assert alibi_slopes(2) == [2.0 ** -4, 2.0 ** -8]
    assert len(alibi_slopes(6)) == 6
    mask = alibi_causal_mask(8, 4)
    assert mask.shape == (8, 4, 4)
    assert torch.isinf(mask[:, 0, 1:]).all() and torch.isinf(mask[:, 2, 3]).all()
    assert mask[0, 3, 0].item() == pytest.approx(-1.5)      # slope 0.5 x distance 3
    assert mask[7, 3, 2].item() == pytest.approx(-(0.5 ** 8))
    assert (mask.diagonal(dim1=1, dim2=2) == 0).all()
    cross = own_frame_mask(3, 5)
    assert cross.tolist() == [[False, True, True, True, True], [True, False, True, True, True],
                              [True, True, False, True, True]]


@pytest.mark.parametrize(("length", "bounds"), [
    (1, [(0, 1)]), (30, [(0, 30)]), (150, [(0, 150)]), (151, [(0, 151)]), (299, [(0, 299)]),
    (300, [(0, 150), (150, 300)]), (301, [(0, 150), (150, 301)]), (450, [(0, 150), (150, 300), (300, 450)]),
])
def test_chunk_bounds_merge_the_remainder(length: int, bounds: list) -> None:
    assert chunk_bounds(length, 150) == bounds


@pytest.fixture(scope="module")
def shard_windows(feature_shards: Path) -> list[dict]:
    """The three clips of the real sample shard (wav2vec.npy (T,32), lmks3d.npy, pose6d.npy)."""
    import webdataset as wds

    samples = wds.WebDataset(str(feature_shards / "sample-train-000000.tar"), shardshuffle=False).decode()
    return [{k: s[k] for k in ("__key__", "wav2vec.npy", "lmks3d.npy", "pose6d.npy")} for s in samples]


def test_heads_run_on_cached_shard_features(shard_windows: list[dict]) -> None:
    torch.manual_seed(0)
    mesh = Audio2MeshModel(**Audio2MeshModel.tiny_config(audio_dim=32)).eval()
    pose = Audio2PoseModel(audio_dim=32, hidden=32, heads=2, layers=2, ffn=64).eval()
    assert pose.audio_encoder is None                                 # head only: no wav2vec2 at train time
    assert len(shard_windows) == 3
    for sample in shard_windows:
        features = torch.from_numpy(sample["wav2vec.npy"].astype(np.float32))[None]
        frames = features.shape[1]
        assert frames == len(sample["lmks3d.npy"]) == len(sample["pose6d.npy"])
        offsets = mesh.head(features)
        assert offsets.shape == (1, frames, 468, 3)
        assert torch.count_nonzero(offsets) == 0                      # official zero-initialised out_fn
        target = torch.from_numpy(np.nan_to_num(sample["pose6d.npy"]).astype(np.float32))[None]
        predicted = pose.head(features, torch.tensor([5]), shift_poses(target))
        assert predicted.shape == (1, frames, 6) and torch.isfinite(predicted).all()


def test_teacher_forced_head_is_the_training_forward() -> None:
    """One module forward (what DDP hooks) = the model's head, teacher-forced for poses."""
    from models.audio2lmk import TeacherForcedHead

    torch.manual_seed(0)
    features, ids, poses = torch.randn(2, 12, 32), torch.tensor([1, 7]), torch.randn(2, 12, 6)
    for model in (Audio2MeshModel(**Audio2MeshModel.tiny_config()), Audio2PoseModel(**Audio2PoseModel.tiny_config())):
        model.eval()
        head = TeacherForcedHead(model)
        assert list(head.state_dict()) == [f"model.{k}" for k in model.state_dict()]
        with torch.no_grad():
            ours = head(features, ids, poses)
            if isinstance(model, Audio2MeshModel):
                torch.testing.assert_close(ours, model.head(features))
            else:
                torch.testing.assert_close(ours, model.head(features, ids, shift_poses(poses)))
    with pytest.raises(TypeError, match="Audio2MeshModel or Audio2PoseModel"):
        TeacherForcedHead(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


def test_teacher_forcing_is_causal_and_matches_generation(shard_windows: list[dict]) -> None:
    """Fed its own outputs, the teacher-forced head reproduces autoregressive generation, and a
    change to late inputs never changes earlier outputs (ALiBi causal mask, own-frame memory)."""
    torch.manual_seed(0)
    model = Audio2PoseModel(**Audio2PoseModel.tiny_config()).eval()
    features = torch.from_numpy(shard_windows[2]["wav2vec.npy"].astype(np.float32))[None]
    ids = torch.tensor([3])
    with torch.no_grad():
        generated = model.generate(features, ids)
        forced = model.head(features, ids, shift_poses(generated))
        torch.testing.assert_close(forced, generated, atol=1e-5, rtol=1e-4)
        poses_in = shift_poses(generated).clone()
        altered_in = poses_in.clone()
        altered_in[:, 40:] += 5.0
        altered_features = features.clone()
        altered_features[:, 40:] += 1.0
        a = model.head(features, ids, poses_in)
        b = model.head(altered_features, ids, altered_in)
    torch.testing.assert_close(a[:, :40], b[:, :40])
    assert not torch.allclose(a[:, 40:], b[:, 40:])


@pytest.mark.parametrize("seconds", [1, 5, 10])
def test_generation_lengths(seconds: int) -> None:
    """1 s (under one chunk), 5 s (one chunk) and 10 s (exactly two: the official code fails on both
    the first and the last) give one pose per frame; each chunk restarts from a zero pose."""
    torch.manual_seed(0)
    model = Audio2PoseModel(**Audio2PoseModel.tiny_config()).eval()
    frames = math.ceil(seconds * 30)
    features = torch.randn(1, frames, 32)
    ids = torch.tensor([0])
    poses = model.generate(features, ids, chunk=150)
    assert poses.shape == (1, frames, 6) and torch.isfinite(poses).all()
    if seconds == 10:
        torch.testing.assert_close(poses[:, 150:], model.generate(features[:, 150:], ids, chunk=150))
    with torch.no_grad():
        audio = model.infer(torch.randn(1, seconds * 16000), frames, ids)
    assert audio.shape == (1, frames, 6)
