"""``card`` and ``verify`` on a real sample build, and the shards read by Hugging Face ``datasets``."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml

from pipelines.tools.card import README_NAME, shard_patterns, write_card
from aniportrait.scores import SCORES
from pipelines.tools.card_plots import ShardFrames, make_plots
from pipelines.tools.verify import verify_release

pytestmark = pytest.mark.slow

CLI = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "aniportrait-data"


@pytest.fixture(scope="module")
def built(sample_build: tuple[Path, object]) -> Path:
    """The real local-Ray build of the embedded sample (``conftest.sample_build``, read only)."""
    return sample_build[0]


def _copy(out: Path, dest: Path) -> Path:
    shutil.copytree(out, dest, ignore=shutil.ignore_patterns("_work"))
    return dest


def _manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n")
    header, _, _ = readme[4:].partition("\n---\n")
    return yaml.safe_load(header)


def test_card_writes_a_hub_readme_and_plots(built: Path, tmp_path: Path) -> None:
    out = _copy(built, tmp_path / "out")
    result = write_card(str(out))
    readme = (out / README_NAME).read_text()
    readme_bytes = (out / README_NAME).read_bytes()
    meta = _front_matter(readme)
    shards = sorted(p.name for p in out.glob("*.tar"))
    release = json.loads((out / "release.json").read_text())
    [config] = meta["configs"]
    [files] = config["data_files"]
    assert files["split"] == release["split"]
    assert sorted({name for pattern in files["path"] for name in fnmatch.filter(shards, pattern)}) == shards
    assert meta["license"] == "other" and meta["size_categories"] == ["n<1K"] and "webdataset" in meta["tags"]
    for section in ("## Summary", "## How it was built", "## Members of a sample", "## Plots",
                    "## Failure reasons", "## How to load", "## Licence and attribution", "## Citation"):
        assert section in readme
    assert release["config_hash"] in readme and release["models"]["face"]["sha256"] in readme
    assert "2403.17694" in readme and "| `lmks.npy` | (T, 478, 3) float32 |" in readme
    ok = [r for r in _manifest(out) if r["status"] == "ok"]
    assert f"| frames | {sum(r['frames'] for r in ok)} |" in readme
    names = sorted(Path(p).name for p in result.plots)
    assert {"durations.png", "face_sizes.png", "head_pose.png"} <= set(names) and "failures.png" not in names
    measured = {c for r in ok for c, v in r.items() if v is not None}
    for figure in ("sync", "quality"):
        plotted = {s.name for s in SCORES if s.plot is not None and s.plot.figure == figure}
        assert (f"{figure}.png" in names) == bool(measured & plotted)
    for name in names:
        assert f"](card/{name})" in readme
        image = cv2.imread(str(out / "card" / name))
        assert image is not None and image.shape[0] > 100 and image.std() > 0

    pngs = {name: (out / "card" / name).read_bytes() for name in names}
    write_card(str(out))
    assert (out / README_NAME).read_bytes() == readme_bytes
    assert {name: (out / "card" / name).read_bytes() for name in names} == pngs

    elsewhere = tmp_path / "card_elsewhere"
    run = _cli("card", str(out), "--out", str(elsewhere))
    assert run.returncode == 0, run.stderr
    assert (elsewhere / README_NAME).read_bytes() == readme_bytes
    assert {name: (elsewhere / "card" / name).read_bytes() for name in names} == pngs


def test_shard_patterns_keep_shard_families_apart() -> None:
    names = ["hdtf-train-000000.tar", "hdtf-train-000001.tar", "hdtf-train-v002-000000.tar"]
    patterns = shard_patterns(names)
    others = ["hdtf-train-rejected-000000.tar", "hdtf-test-000000.tar", "hdtf-train-v003-000000.tar"]
    assert sorted({n for p in patterns for n in fnmatch.filter(names + others, p)}) == names


def test_card_plots_quality_columns_and_failures_when_present(built: Path) -> None:
    rows = _manifest(built)
    rng = np.random.default_rng(0)
    measured = [{**r, "face_px_median": float(rng.uniform(150, 400)), "yaw_range_deg": float(rng.uniform(0, 30)),
                 "sharpness": float(rng.uniform(10, 90)), "sync_offset": float(rng.integers(-3, 4)),
                 "sync_conf": float(rng.uniform(0, 10))} for r in rows]
    failed = [{**rows[0], "clip_id": f"x{i}", "status": "failed", "failed_stage": "face",
               "error": f"face found in {i} of 90 frames ({i / 90:.0%}), fewer than 90%"} for i in range(3)]
    filtered = [{**rows[0], "clip_id": "y", "status": "filtered", "error": "filtered:face_px>=150"}]
    plots = {p.name: p for p in make_plots(measured + failed + filtered, ShardFrames())}
    assert sorted(plots) == ["durations.png", "face_sizes.png", "failures.png", "quality.png", "sync.png"]
    assert "face_px_median" in plots["face_sizes.png"].caption
    assert "yaw_range_deg" in plots["quality.png"].caption and "sync_conf" in plots["sync.png"].caption
    assert plots["failures.png"].caption.startswith("4 clips")
    for plot in plots.values():
        image = cv2.imdecode(np.frombuffer(plot.png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.std() > 0


def test_verify_passes_on_the_build(built: Path) -> None:
    report = verify_release(str(built))
    assert report.ok, report.all_problems()
    ok_ids = sorted(r["clip_id"] for r in _manifest(built) if r["status"] == "ok")
    assert sorted(k for s in report.shards for k in s.keys) == ok_ids
    run = _cli("verify", str(built))
    assert run.returncode == 0, run.stderr
    assert "match release.json" in run.stderr


def test_verify_names_a_corrupt_a_missing_and_an_extra_shard(built: Path, tmp_path: Path) -> None:
    out = _copy(built, tmp_path / "out")
    shard = out / json.loads((out / "release.json").read_text())["shards"][0]["name"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify_release(str(out))
    assert not report.ok
    assert [p for p in report.all_problems() if p.startswith(f"{shard.name}: sha256")]
    run = _cli("verify", str(out))
    assert run.returncode == 1 and shard.name in run.stderr and "sha256" in run.stderr

    shard.unlink()
    (out / "stray-000000.tar").write_bytes(b"")
    problems = verify_release(str(out)).all_problems()
    assert f"{shard.name}: missing: listed in release.json but not found" in problems
    assert "stray-000000.tar: not listed in release.json" in problems
    run = _cli("verify", str(out))
    assert run.returncode == 1 and "missing" in run.stderr

    manifest = out / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[:-1] + b"x")
    assert "manifest.parquet: sha256 differs from release.json" in verify_release(str(out)).all_problems()
    assert _cli("verify", str(tmp_path / "nothing")).returncode == 2


def _loader_features(shard: Path):
    """The features the ``webdataset`` loader infers, with ``wav`` kept as bytes and the
    videos undecoded: ``datasets`` needs ``torchcodec`` to encode or decode those."""
    import pyarrow as pa
    from datasets import Features, Video
    from datasets.features.features import cast_to_python_objects

    samples = [{k: v for k, v in s.items() if k != "__local_path__"}
               for s in wds.WebDataset(str(shard), shardshuffle=False).decode()]
    table = pa.Table.from_pylist(cast_to_python_objects(samples, only_1d_for_numpy=True))
    features = Features.from_arrow_schema(table.schema)
    for name in features:
        if name.endswith("mp4"):
            features[name] = Video(decode=False)
    return features


def test_shards_load_with_hugging_face_datasets(built: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"HF_HOME": tmp_path / "hf", "HF_DATASETS_CACHE": tmp_path / "hf" / "datasets",
                        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, str(value))
    import datasets

    card = write_card(str(built), str(tmp_path / "card"))
    [files] = _front_matter(Path(card.readme).read_text())["configs"][0]["data_files"]
    shards = sorted(str(p) for p in built.glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_dir=str(built), data_files={files["split"]: files["path"]},
                               split=files["split"], features=_loader_features(Path(shards[0])),
                               cache_dir=str(tmp_path / "hf" / "cache"))
    ok = {r["clip_id"]: r for r in _manifest(built) if r["status"] == "ok"}
    assert ds.num_rows == len(ok)
    originals = {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)}
    for row in ds:
        manifest_row = ok[row["json"]["clip_id"]]
        assert row["__key__"] == manifest_row["clip_id"]
        assert np.asarray(row["lmks.npy"], dtype=np.float32).shape == (manifest_row["frames"], 478, 3)
        assert np.asarray(row["has_face.npy"]).shape == (manifest_row["frames"],)
        original = originals[row["__key__"]]
        assert row["mp4"]["bytes"] == original["mp4"] and row["wav"] == original["wav"]


def test_card_and_verify_on_s3(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same commands on a release in a real S3-compatible server (moto) on loopback."""
    import boto3
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="release")
        uri = f"s3://release/sample?endpoint_override={host}:{port}&scheme=http"
        s3, root = pafs.FileSystem.from_uri(uri)
        local = _copy(built, tmp_path / "out")
        pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=s3)
        assert verify_release(uri).ok
        result = write_card(uri)
        assert result.readme == "s3://release/sample/README.md"
        write_card(str(local))
        with s3.open_input_stream(f"{root}/README.md") as stream:
            assert stream.read() == (local / README_NAME).read_bytes()
        s3.delete_file(f"{root}/{json.loads((local / 'release.json').read_text())['shards'][0]['name']}")
        assert any("missing" in p for p in verify_release(uri).all_problems())
    finally:
        server.stop()
