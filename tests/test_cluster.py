"""A real two-node Ray cluster on this machine: ``build --address`` gives the local build's bytes.

The head and the worker node are ``ray start --block`` processes with one CPU each and
their own temp dir (so no other ``ray.init()`` on this machine finds them); stopping
the ``ray start`` processes stops each node's raylet, GCS and workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sample_lists import SAMPLE_SIZE_ARGS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
SAMPLE_CLIPS = 3
#: Token authentication is off on this loopback-only test cluster.
CLUSTER_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), "COLUMNS": "250"}

#: Run against the cluster after the build: which node each clip's stage chain ran on.
#: Without the dashboard (not installed here) Ray's state API is out of reach, so this
#: joins the job's task events (``ray.timeline``) to the actor table (dead actors
#: included) by actor id, the last 16 bytes of an actor task's id.
PLACEMENT = """
import collections, json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
node_of = {actor_id: a["Address"]["NodeID"] for actor_id, a in ray._private.state.actors().items()
           if a["ActorClassName"] == "MapWorker(MapBatches(StageChain))"}
clips = collections.Counter(node_of[e["args"]["task_id"][-32:]] for e in ray.timeline()
                            if e.get("cat") == "task::MapWorker(MapBatches(StageChain)).submit")
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
print(json.dumps({"nodes": nodes, "actor_nodes": sorted(node_of.values()), "clips_per_node": clips}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """``ray start --block ARGS``; returns once the node reports it is up."""
    proc = subprocess.Popen([RAY, "start", "--block", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats", *args],
                            env=CLUSTER_ENV, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_node(proc)
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def _stop_node(proc: subprocess.Popen) -> None:
    """SIGTERM the ``ray start`` process (it stops its node), then SIGKILL whatever of its group is left."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def cluster_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The sample built by the CLI on a head + worker cluster; where its clips ran.

    The cluster is stopped before the tests run, even when the build fails.
    """
    root = tmp_path_factory.mktemp("cluster")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited to 107 bytes
    nodes: list[subprocess.Popen] = []
    try:
        port = _free_port()
        nodes.append(_start_node(["--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false"],
                                 root / "head.log"))
        address = Path(temp_dir, "ray_current_cluster").read_text().strip()
        nodes.append(_start_node([f"--address={address}"], root / "worker.log"))
        out = root / "out"
        build = subprocess.run([sys.executable, "-m", "cli", "build", "--dataset", "sample", "--address", address,
                                "--out", str(out), "--workers", "2", *SAMPLE_SIZE_ARGS],
                               cwd=root, env=CLUSTER_ENV, capture_output=True, text=True, timeout=900)
        assert build.returncode == 0, build.stderr
        placement = subprocess.run([sys.executable, "-c", PLACEMENT, address], env=CLUSTER_ENV, capture_output=True,
                                   text=True, timeout=300)
        assert placement.returncode == 0, placement.stderr
        return out, json.loads(placement.stdout.strip().splitlines()[-1])
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_clips_ran_on_both_nodes(cluster_build: tuple[Path, dict]) -> None:
    _, placement = cluster_build
    assert len(placement["nodes"]) == 2
    assert placement["actor_nodes"] == placement["nodes"], "one clip worker per node (one CPU each)"
    clips = placement["clips_per_node"]
    assert sorted(clips) == placement["nodes"] and sum(clips.values()) == SAMPLE_CLIPS, clips


def test_cluster_release_equals_a_local_build(cluster_build: tuple[Path, dict],
                                               sample_build: tuple[Path, object]) -> None:
    """Compared with ``conftest.sample_build``: the same options on a local Ray."""
    out, _ = cluster_build
    local, _ = sample_build
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert sorted(files) == ["manifest.parquet", "release.json", "sample-train-000000.tar"]
    assert files == {p.name: p.read_bytes() for p in sorted(local.iterdir()) if p.is_file()}
