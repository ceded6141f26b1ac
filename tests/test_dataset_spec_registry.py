"""The dataset contract (issue 16): every dataset is one registered ``DatasetSpec``.

The built-in specs are complete, the registry refuses unknown and duplicate names, and a
toy dataset registered here, in this process, flows through the real build (local Ray,
ffmpeg, MediaPipe), the dataset card and the CLI without any other file knowing it.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

import cli
import datasets_spec
from aniportrait.media.cut import CutSettings
from aniportrait.schema import ClipRecord
from datasets_spec import DATASETS, DatasetSpec, Licence, MetadataError, UnknownDatasetError, register, sample
from pipelines.build.run import SetupError, load_records, run_build
from pipelines.tools.card import README_NAME, write_card
from pipelines.build.config import BuildConfig

BUILT_IN = ["celebvhq", "folder", "hdtf", "sample", "vfhq"]
TOY_LICENCE = Licence("cc-by-4.0", "toy-licence", "The toy clips are the sample's Radio10, relabelled for a test.")
TOY_CITATION = "@misc{toy2024,\n  title={A Toy Talking-Face Dataset},\n  year={2024}\n}"


def _toy_prepare(metadata: str | Path | None = None, *, split: str = "train",
                 errors: list[MetadataError] | None = None) -> list[ClipRecord]:
    """The sample's ``Radio10_0`` clip as a clip of dataset ``toy``."""
    records = sample.prepare(metadata, split=split, errors=errors)
    return [dataclasses.replace(r, dataset="toy") for r in records if r.clip_id == "Radio10_0"]


TOY = DatasetSpec(name="toy", prepare=_toy_prepare, licence=TOY_LICENCE, citation=TOY_CITATION,
                  homepage="https://example.org/toy", mirror_naming="<video name>.mp4",
                  metadata_note="the sample's lists, one clip", default_mirror=sample.default_mirror(),
                  audio_features_by_default=False)


def test_built_in_specs_are_complete() -> None:
    assert sorted(DATASETS) == BUILT_IN
    for name, spec in DATASETS.items():
        assert spec.name == name and callable(spec.prepare)
        assert spec.licence.hub_id and spec.licence.text and spec.citation.startswith("@")
        assert spec.homepage and spec.mirror_naming and spec.metadata_note
    assert DATASETS["sample"].default_mirror == sample.default_mirror()
    assert [n for n, s in DATASETS.items() if not s.audio_features_by_default] == ["sample"]
    assert [n for n, s in DATASETS.items() if s.default_mirror is not None] == ["sample"]


def test_unknown_and_duplicate_names_are_refused() -> None:
    message = "unknown dataset 'nope'; choose one of celebvhq, folder, hdtf, sample, vfhq"
    with pytest.raises(UnknownDatasetError) as caught:
        datasets_spec.get("nope")
    assert isinstance(caught.value, KeyError) and str(caught.value) == message
    with pytest.raises(SetupError, match=message):
        load_records(BuildConfig(dataset="nope", out="unused", work_dir="unused"))
    hdtf = DATASETS["hdtf"]
    with pytest.raises(ValueError, match="'hdtf' is already registered"):
        register(dataclasses.replace(hdtf, homepage="elsewhere"))
    assert DATASETS["hdtf"] is hdtf


@pytest.fixture(scope="module")
def toy() -> Iterator[DatasetSpec]:
    """The toy spec, registered for this module only."""
    yield register(TOY)
    DATASETS.pop(TOY.name)


@pytest.fixture(scope="module")
def toy_build(toy: DatasetSpec, local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy dataset built in this process on the session's local Ray."""
    out = tmp_path_factory.mktemp("toy") / "out"
    cfg = BuildConfig(dataset=toy.name, out=str(out), work_dir=str(out / "_work"), mirror=str(toy.default_mirror),
                      workers=2, cut=CutSettings(size=128), limit=1)
    result = run_build(cfg, Console(file=io.StringIO()))
    assert result.failed == 0, [s.error for s in result.states if s.error]
    return out


@pytest.mark.slow
def test_toy_dataset_builds_and_has_its_card(toy_build: Path) -> None:
    assert sorted(p.name for p in toy_build.glob("*.tar")) == ["toy-train-000000.tar"]
    manifest = pq.read_table(toy_build / "manifest.parquet").to_pylist()
    assert [(r["dataset"], r["clip_id"], r["status"]) for r in manifest] == [("toy", "Radio10_0", "ok")]
    write_card(str(toy_build))
    readme = (toy_build / README_NAME).read_text()
    assert "license: cc-by-4.0\nlicense_name: toy-licence\n" in readme
    assert TOY_LICENCE.text in readme and f"```bibtex\n{TOY_CITATION}\n```" in readme


@pytest.mark.slow
def test_cli_reads_the_toy_spec(toy_build: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["datasets"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    [row] = [line for line in listed.output.splitlines() if "│ toy " in line]
    assert "cc-by-4.0 / toy-licence" in row and "https://example.org/toy" in row

    # build --dataset toy with neither --mirror nor --wav2vec2, from scratch: the spec's mirror
    # (no yt-dlp download) and no audio features, so the same shard bytes as the first build
    again = toy_build.parent / "again"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        built = runner.invoke(cli.app, ["build", "--dataset", "toy", "--out", str(again), "--size", "128",
                                        "--limit", "1", "--workers", "2"], env={"COLUMNS": "200"})
    finally:
        root.handlers[:], root.level = handlers, level
    assert built.exit_code == 0, built.output
    assert "audio features skipped" in built.output and "toy: 1 clips, 0 already done, 1 to process" in built.output
    shard = "toy-train-000000.tar"
    assert (again / shard).read_bytes() == (toy_build / shard).read_bytes()
