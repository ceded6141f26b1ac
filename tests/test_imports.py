"""The package's import graph: no cycles, and the pure core (``aniportrait/``) stays pure.

The graph is read from the source (every ``import`` statement, lazy ones inside functions
included), so a cycle that only shows at run time in some order is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("aniportrait", "pipelines", "datasets_spec", "models")
#: What the pure core may not import: orchestration, the models' training code, Ray.
CORE_FORBIDDEN = ("ray", "pipelines", "models")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules["cli"] = REPO / "cli.py"
    return modules


def _imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every module name ``path`` imports (absolute, as written or resolved from relative).

    ``from package import submodule`` names the submodule, not the package (a package's
    ``__init__`` that imports its submodules is no cycle with them)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.add(full if full in modules else base)
    return names


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = _modules()

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {name: {m for m in map(project_module, _imported(path, name, modules)) if m and m != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_ray_pipelines_or_models() -> None:
    offenders = {}
    modules = _modules()
    for name, path in modules.items():
        if name.split(".")[0] != "aniportrait":
            continue
        bad = sorted(m for m in _imported(path, name, modules) if m.split(".")[0] in CORE_FORBIDDEN)
        if bad:
            offenders[name] = bad
    assert offenders == {}


#: Libraries the build driver never calls, only its workers: importing them at start-up cost
#: the command line 1.5 s (torch through webdataset 0.8, scipy.signal 0.35, scipy.spatial 0.15).
WORKER_ONLY = ("torch", "webdataset", "mediapipe", "scipy.signal", "scipy.spatial")


def test_the_build_command_imports_no_worker_only_library() -> None:
    code = ("import sys, cli\nfrom pipelines.build.run import run_build\n"
            f"print(sorted(m for m in {WORKER_ONLY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
