"""``--out s3://...`` against a real S3 server (moto's server mode) on loopback.

Builds run through the CLI in subprocesses (their own local Ray), with credentials and
endpoint in the standard AWS environment variables; reads in this process name the
endpoint in the URI instead. Objects are listed and fetched with boto3.
"""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import webdataset as wds
from rich.console import Console
from sample_lists import SAMPLE_SIZE_ARGS, copy_work

from aniportrait.storage import OutputDir, OutputError
from pipelines.tools.report import inspect_release, manifest_stats

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BUCKET = "aniportrait"
SAMPLE_IDS = ["LylTalking_0", "LylTalking_1", "Radio10_0"]
EXIT_USAGE = 2
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """``moto_server`` in a subprocess on a fixed loopback port; can be stopped and started again."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start an empty server and create the bucket."""
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client().create_bucket(Bucket=BUCKET)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def client(self):  # noqa: ANN201 - boto3 client types are generated
        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    def uri(self, prefix: str) -> str:
        """The prefix as a URI that names this endpoint (for readers in this process)."""
        return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix/`` (directory markers included)."""
        listing = self.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def files(self, prefix: str) -> dict[str, bytes]:
        """The objects under ``prefix/`` by base name, directory markers left out."""
        client = self.client()
        return {key.rsplit("/", 1)[1]: client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                for key in self.keys(prefix) if not key.endswith("/")}


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server with an empty bucket; AWS credentials (not the endpoint) in this process."""
    server = MotoServer()
    server.start()
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            patch.setenv(name, nowhere)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        try:
            yield server
        finally:
            server.stop()


def _cli(s3: MotoServer, *args: str, cwd: Path) -> subprocess.Popen:
    """``aniportrait-data`` in a subprocess, told the endpoint the way a user would: AWS_ENDPOINT_URL."""
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.endpoint, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _run(s3: MotoServer, *args: str, cwd: Path) -> tuple[int, str]:
    proc = _cli(s3, *args, cwd=cwd)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, " ".join(err.split())


def _local_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def _assert_same_release(got: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """Same files with the same bytes (release files compared as JSON first, for a readable diff)."""
    assert sorted(got) == sorted(expected)
    assert json.loads(got["release.json"]) == json.loads(expected["release.json"])
    assert got == expected


def _markers(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in work.glob("clips/*/*.done.json")}


@pytest.fixture(scope="module")
def reference(sample_build: tuple[Path, object]) -> Path:
    """The local build of the sample (``conftest.sample_build``; its work area is reused by the S3 build)."""
    return sample_build[0]


@pytest.fixture(scope="module")
def s3_build(s3: MotoServer, reference: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same build written to ``s3://aniportrait/run1``; clips come from (a copy of) the local build's work area."""
    root = tmp_path_factory.mktemp("run1")
    work = copy_work(reference, root / "work")
    before = _markers(work)
    code, err = _run(s3, "build", "--dataset", "sample", "--out", f"s3://{BUCKET}/run1", "--work-dir", str(work),
                     "--workers", "2", *SAMPLE_SIZE_ARGS, cwd=root)
    assert code == 0, err
    assert "3 clips, 3 already done, 0 to process" in err
    assert _markers(work) == before
    return "run1"


def test_s3_release_equals_the_local_build_byte_for_byte(s3: MotoServer, reference: Path, s3_build: str) -> None:
    uploaded = s3.files(s3_build)
    assert sorted(uploaded) == ["manifest.parquet", "release.json", "sample-train-000000.tar"]
    _assert_same_release(uploaded, _local_files(reference))
    assert b"s3://" not in uploaded["release.json"] and b"run1" not in uploaded["release.json"], "no output location"
    assert s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads") is None, "no upload left open"


def test_inspect_stats_and_webdataset_read_the_s3_release(s3: MotoServer, s3_build: str) -> None:
    console = Console(file=io.StringIO(), record=True, width=250)
    inspect_release(s3.uri(s3_build), 3, console)
    manifest_stats(s3.uri(s3_build), console)
    shown = console.export_text()
    assert "3 clips in 1 shards" in shown and "3 clips: 3 ok" in shown
    assert all(clip_id in shown for clip_id in SAMPLE_IDS)
    # webdataset streams the shard straight from the server (its http reader pipes curl).
    url = f"{s3.endpoint}/{BUCKET}/{s3_build}/sample-train-000000.tar"
    samples = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in samples] == SAMPLE_IDS
    assert all(len(s["mp4"]) > 1000 and len(s["lmks.npy"]) > 1000 for s in samples)


def _everything(backend: str, out: OutputDir, s3: MotoServer, prefix: str) -> list[str]:
    """Every file or object under ``out``, temporaries and open uploads included."""
    if backend == "local":
        return sorted(str(p) for p in Path(out.root).rglob("*"))
    if backend == "memory":
        return sorted(out.fs.handler.fs.find(out.root))
    uploads = s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])
    return s3.keys(prefix) + [f"upload of {u['Key']}" for u in uploads]


@pytest.mark.parametrize("backend", ["local", "memory", "s3"])
def test_a_failed_writer_leaves_no_object(backend: str, s3: MotoServer, tmp_path: Path) -> None:
    prefix = f"{tmp_path.name}/out"
    uri = {"local": str(tmp_path / "out"),
           "memory": f"memory://{prefix}",  # an fsspec-only scheme: the fallback through FSSpecHandler
           "s3": s3.uri(prefix)}[backend]
    out = OutputDir.from_uri(uri)
    listing = functools.partial(_everything, backend, out, s3, prefix)
    out.makedirs()
    before = listing()
    chunk = os.urandom(1 << 20)
    with pytest.raises(RuntimeError, match="half-way"):
        with out.atomic_writer("shard.tar") as stream:
            for _ in range(12):  # more than one 5 MiB multipart part
                stream.write(chunk)
            raise RuntimeError("the writer failed half-way")
    assert listing() == before, "nothing, not even a temporary, is left"
    out.write_bytes("shard.tar", chunk)
    assert out.read_bytes("shard.tar") == chunk and out.list_names() == ["shard.tar"]
    assert len(listing()) == len(before) + 1


def test_a_missing_bucket_is_an_error_naming_it(s3: MotoServer) -> None:
    out = OutputDir.from_uri(s3.uri("run1").replace(f"s3://{BUCKET}/", "s3://no-such-bucket/"))
    with pytest.raises(OutputError, match="s3://no-such-bucket/run1"):
        out.makedirs()


def test_a_failed_upload_ends_with_a_clear_error_and_resumes(s3: MotoServer, reference: Path,
                                                              tmp_path: Path) -> None:
    """Two clips are already in the work area (copied from the local build); the server goes
    away while the third one is processed."""
    work = copy_work(reference, tmp_path / "work", clips=SAMPLE_IDS[:2])
    args = ("build", "--dataset", "sample", "--out", f"s3://{BUCKET}/run2", "--work-dir", str(work), "--workers", "2",
            *SAMPLE_SIZE_ARGS)
    proc = _cli(s3, *args, cwd=tmp_path)
    deadline = time.monotonic() + 300
    processed = work / "clips" / SAMPLE_IDS[2] / "clip.done.json"
    while not processed.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    s3.stop()  # the server goes away while the clips are processed, before the pack phase
    try:
        _, err = proc.communicate(timeout=600)
        err = " ".join(err.split())
        assert proc.returncode == EXIT_USAGE, err
        assert f"cannot upload s3://{BUCKET}/run2/sample-train-000000.tar" in err, err
        assert "run the same command again to resume" in err and "Traceback" not in err, err
        done = _markers(work)
        assert len(done) >= len(SAMPLE_IDS), "every clip finished before the upload failed"
    finally:
        s3.start()
    code, err = _run(s3, *args, cwd=tmp_path)
    assert code == 0, err
    assert "3 clips, 3 already done, 0 to process" in err
    assert _markers(work) == done, "finished clips were redone"
    _assert_same_release(s3.files("run2"), _local_files(reference))
