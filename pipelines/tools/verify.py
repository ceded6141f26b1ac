"""Re-check a built release against its ``release.json``.

:func:`verify_release` streams every shard that ``release.json`` lists (``shards`` and
``rejected_shards``) once, from a local disk or any pyarrow filesystem, hashing the bytes
while webdataset's tar reader groups them into samples, and compares sha256, size,
sample count and sample keys with ``release.json`` and ``manifest.parquet``. It also
checks the manifest's own sha256 and size, that each shard holds exactly the clips whose
manifest row names it (every ``ok`` clip has one), and reports ``.tar`` files the
release does not list. Nothing is written.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aniportrait.format import MANIFEST_NAME, read_release, read_shard
from aniportrait.storage import OutputDir, sha256_bytes

READ_CHUNK = 1 << 20
#: Shards read at the same time (reads and hashing release the GIL).
VERIFY_THREADS = 4


@dataclass
class ShardCheck:
    """What one shard should be (from ``release.json``) and what it is."""

    name: str
    expected_sha256: str
    expected_size: int
    expected_samples: int
    sha256: str | None = None
    size: int | None = None
    keys: list[str] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """The result of :func:`verify_release`: one check per listed shard and release-wide problems."""

    out: str
    shards: list[ShardCheck]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)

    def all_problems(self) -> list[str]:
        """Every problem, shard problems prefixed with the shard name."""
        return [f"{s.name}: {p}" for s in self.shards for p in s.problems] + self.problems


class _HashingReader:
    """Read-only file wrapper that hashes and counts every byte read through it."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream, self.name, self.digest, self.size = stream, name, hashlib.sha256(), 0

    def __repr__(self) -> str:  # webdataset names the stream in its errors
        return self.name

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(READ_CHUNK):
            pass


def check_shard(out: OutputDir, entry: dict[str, Any]) -> ShardCheck:
    """Stream one shard: sha256, size and the keys of its samples, compared with ``entry``."""
    check = ShardCheck(entry["name"], entry["sha256"], int(entry["size"]), int(entry["samples"]))
    if not out.exists(check.name):
        check.problems.append("missing: listed in release.json but not found")
        return check
    with out.fs.open_input_stream(out.path(check.name)) as stream:
        reader = _HashingReader(stream, check.name)
        try:  # keys stay None when the tar cannot be read to its end
            check.keys = [sample["__key__"] for sample in read_shard(reader, check.name)]
        except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
            check.problems.append(f"unreadable as a WebDataset tar ({type(exc).__name__}: {exc})")
        reader.drain()
    check.sha256, check.size = reader.digest.hexdigest(), reader.size
    if check.size != check.expected_size:
        check.problems.append(f"size {check.size} bytes, release.json says {check.expected_size}")
    if check.sha256 != check.expected_sha256:
        check.problems.append(f"sha256 {check.sha256[:16]}..., release.json says {check.expected_sha256[:16]}...")
    if check.keys is not None:
        if len(check.keys) != check.expected_samples:
            check.problems.append(f"{len(check.keys)} samples, release.json says {check.expected_samples}")
        duplicates = sorted({k for k in check.keys if check.keys.count(k) > 1})
        if duplicates:
            check.problems.append(f"duplicate sample keys {', '.join(duplicates[:5])}")
    return check


def check_manifest(out: OutputDir, release: dict[str, Any], shards: list[ShardCheck]) -> list[str]:
    """The manifest's sha256, size and row count, and its ``shard`` column against the shards' samples."""
    entry = release.get("manifest") or {}
    name = entry.get("name", MANIFEST_NAME)
    if not out.exists(name):
        return [f"{name}: missing"]
    data = out.read_bytes(name)
    problems = []
    if len(data) != entry.get("size"):
        problems.append(f"{name}: size {len(data)} bytes, release.json says {entry.get('size')}")
    if sha256_bytes(data) != entry.get("sha256"):
        problems.append(f"{name}: sha256 differs from release.json")
    try:
        rows = pq.read_table(io.BytesIO(data), columns=["clip_id", "status", "shard"]).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        return problems + [f"{name}: unreadable as Parquet ({exc})"]
    if entry.get("rows") is not None and len(rows) != entry["rows"]:
        problems.append(f"{name}: {len(rows)} rows, release.json says {entry['rows']}")
    expected: dict[str, set[str]] = {}
    for row in rows:
        if row["shard"]:
            expected.setdefault(row["shard"], set()).add(row["clip_id"])
    unsharded = sorted(r["clip_id"] for r in rows if r["status"] == "ok" and not r["shard"])
    if unsharded:
        problems.append(f"{name}: ok clips in no shard: {', '.join(unsharded[:5])}")
    found = {s.name: set(s.keys) for s in shards if s.keys is not None}
    listed = {s.name for s in shards}
    for shard_name in sorted(set(expected) | set(found)):
        if shard_name not in listed:
            problems.append(f"{name}: {len(expected[shard_name])} clips in {shard_name}, "
                            "which release.json does not list")
        if shard_name not in found:  # a listed shard that could not be read is reported already
            continue
        missing = sorted(expected.get(shard_name, set()) - found[shard_name])
        extra = sorted(found[shard_name] - expected.get(shard_name, set()))
        if missing:
            problems.append(f"{shard_name}: clips {name} puts in it are missing: {', '.join(missing[:5])}")
        if extra:
            problems.append(f"{shard_name}: samples {name} does not put in it: {', '.join(extra[:5])}")
    ok_rows = sum(r["status"] == "ok" for r in rows)
    counted = (release.get("counts") or {}).get("ok")
    if counted is not None and counted != ok_rows:
        problems.append(f"{name}: {ok_rows} ok rows, release.json counts {counted}")
    return problems


def verify_release(out_uri: str) -> VerifyReport:
    """Re-read every shard listed in ``release.json`` at ``out_uri`` and check it.

    Raises ``FileNotFoundError`` when there is no ``release.json``; every other
    disagreement is a problem in the returned report.
    """
    out = OutputDir.from_uri(out_uri)
    release = read_release(out)
    entries = release.get("shards", []) + release.get("rejected_shards", [])
    with ThreadPoolExecutor(max_workers=VERIFY_THREADS) as pool:
        shards = list(pool.map(lambda entry: check_shard(out, entry), entries))
    problems = check_manifest(out, release, shards)
    listed = {s.name for s in shards}
    problems += [f"{name}: not listed in release.json" for name in out.list_names(".tar") if name not in listed]
    return VerifyReport(out=out_uri, shards=shards, problems=problems)
