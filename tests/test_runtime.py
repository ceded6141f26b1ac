"""pipelines.runtime: how the commands start and end their own Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: A command's life in short: start a Ray of its own, run a task, end (ray_of_this_command);
#: prints the processes Ray started (pid -> command line, start time) and whether Ray is still up.
_COMMAND = """
import json, psutil, ray
from pipelines.runtime import init_ray, ray_of_this_command
with ray_of_this_command():
    init_ray(None)
    ray.get(ray.remote(lambda: 1).remote())
    started = {p.pid: [" ".join(p.cmdline()), p.create_time()] for p in psutil.Process().children(recursive=True)}
print(json.dumps({"started": started, "initialized": ray.is_initialized()}))
"""


def test_a_command_ends_every_process_of_the_ray_it_started() -> None:
    import psutil

    done = subprocess.run([sys.executable, "-c", _COMMAND], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    commands = [command for command, _ in report["started"].values()]
    for program in ("gcs_server", "raylet", "monitor.py", "log_monitor.py"):
        assert any(program in command for command in commands), (program, commands)
    assert not report["initialized"]
    alive = []
    for pid, (command, created) in report["started"].items():
        try:
            process = psutil.Process(int(pid))
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(command)
        except psutil.NoSuchProcess:
            pass
    assert alive == [], f"still running after the command: {alive}"


def test_a_command_leaves_a_ray_that_was_up_before_it(local_ray: None) -> None:
    import ray

    from pipelines.runtime import ray_of_this_command

    with ray_of_this_command():
        assert ray.get(ray.remote(lambda: 2).remote()) == 2
    assert ray.is_initialized()
    assert ray.get(ray.remote(lambda: 3).remote()) == 3
