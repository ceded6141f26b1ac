"""Shared test fixtures: where ``../shared`` lives and small helpers around it."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ANIPORTRAIT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder with real media, metadata and golden data."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set ANIPORTRAIT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "media"


@pytest.fixture(scope="session")
def metadata_dir(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "metadata"


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised, tiny Wav2Vec2Model saved with ``save_pretrained``."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    folder = tmp_path_factory.mktemp("wav2vec2")
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def feature_shards(tiny_wav2vec2: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded sample built once at 256 px with tiny wav2vec2 features (32-d).

    Real shards for the trainers' and inference tests: three clips (~3 s each, 30 fps)
    with ``mp4``, ``wav``, ``pose.mp4``, ``lmks.npy``, ``lmks3d.npy``, ``pose6d.npy`` and
    ``wav2vec.npy``. Built in this process on the session's local Ray.
    """
    from rich.console import Console

    from aniportrait.media.cut import CutSettings
    from datasets_spec import sample
    from pipelines.build.config import BuildConfig
    from pipelines.build.run import run_build

    out = tmp_path_factory.mktemp("feature_shards") / "out"
    cfg = BuildConfig(dataset="sample", out=str(out), work_dir=str(out / "_work"), mirror=str(sample.default_mirror()),
                      workers=2, cut=CutSettings(size=256), wav2vec2=str(tiny_wav2vec2))
    result = run_build(cfg, Console(file=io.StringIO()))
    assert result.failed == 0, [s.error for s in result.states if s.error]
    return out


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs) for every build, training and inference run in this process:
    started by the first test that needs it, stopped when the session ends (a start and stop
    cost ~6 s on the 2-core CI machine). Tests must not stop it. Commands run as their own
    processes start their own Ray, as users' commands do."""
    import ray

    from pipelines.runtime import ray_of_this_command

    with ray_of_this_command():  # stops only a Ray started here
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield


@pytest.fixture(scope="session")
def sample_build(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The embedded sample (3 clips) built once at ``SAMPLE_SIZE`` px without audio features:
    (out, BuildResult). The local build every byte-identity test compares its own build with
    (S3, cluster, remote cache, resumes, faults); read only, copy it before changing anything.

    Built in this process on the session's local Ray, so the result carries the build's
    timings and worker memory.
    """
    from rich.console import Console
    from sample_lists import SAMPLE_SIZE

    from aniportrait.media.cut import CutSettings
    from datasets_spec import sample
    from pipelines.build.run import run_build
    from pipelines.build.config import BuildConfig

    out = tmp_path_factory.mktemp("sample_build") / "out"
    cfg = BuildConfig(dataset="sample", out=str(out), work_dir=str(out / "_work"), mirror=str(sample.default_mirror()),
                      workers=2, cut=CutSettings(size=SAMPLE_SIZE))
    result = run_build(cfg, Console(file=io.StringIO()))
    assert result.failed == 0, [s.error for s in result.states if s.error]
    return out, result


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module of tiny-model tests.

    Tiny models gain nothing from threads, and OpenMP workers spinning on a busy 2-core
    runner cost seconds per call (measured 20-40x slower with 2 threads under load).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
