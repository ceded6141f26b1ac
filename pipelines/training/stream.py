"""Deterministic, resumable streams of training items read from the build's WebDataset shards.

One epoch on one rank is a webdataset pipeline (``wds.DataPipeline``):

1. the shard list, shuffled with a seed of ``(seed, epoch)``, the same on every rank;
2. split between the ranks and the DataLoader workers (``rank`` of ``world_size`` given
   explicitly, then ``wds.split_by_worker``): by shard when there are at least
   ``world_size * max(1, num_workers)`` shards, otherwise by sample (every worker reads
   all shards and keeps every n-th sample, so a one-shard dataset still feeds every rank);
3. the shards' samples (``wds.tarfile_to_samples``; only the ``members`` asked for are
   kept in memory), each turned into any number of items by ``decode`` (e.g. training
   windows of a clip);
4. ``wds.shuffle`` with a buffer of ``shuffle_buffer`` items and an rng seeded with
   ``(seed, epoch, rank)`` (each DataLoader worker shuffles its own items with a copy).

A torch ``DataLoader`` runs it in ``num_workers`` processes and hands the results over
in a fixed round-robin order, so the stream of a rank depends only on ``(shards,
decode, seed, shuffle_buffer, rank, world_size, num_workers, batch_size)``. Without
``batch_size`` it yields items as the DataLoader converts them (numpy arrays become
tensors; batch them with :func:`batches`). With ``batch_size`` the workers collate
batches themselves (``default_collate``), one shared-memory tensor per field and batch
instead of per item, which is what makes worker processes pay off; each worker's last
batch of an epoch may be short.

Resume: :attr:`ShardStream.position` is ``(epoch, items yielded on this rank in that
epoch)`` after every item or batch. A stream started at a position rebuilds that
epoch's pipeline with the same seeds and drops its first ``samples`` items (whole
batches: a position this stream recorded is always at a batch boundary), then goes on
identically. The cost is reading and decoding the skipped part of that one epoch again
(up to one epoch of this rank's shards, no training compute); later epochs cost nothing.
"""

from __future__ import annotations

import glob
import logging
import random
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Generic, TypeVar

import braceexpand
import torch
import webdataset as wds
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

from aniportrait.format import RELEASE_NAME, read_release
from aniportrait.storage import OutputDir

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StreamPosition:
    """Where a rank's stream is: ``samples`` items of ``epoch`` already yielded."""

    epoch: int = 0
    samples: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamPosition:
        return cls(epoch=int(data["epoch"]), samples=int(data["samples"]))


def expand_shards(spec: str | Path | list[str] | list[Path]) -> list[str]:
    """Shard paths or URIs of ``spec``, in order.

    ``spec`` is a list of entries, or one string whose entries are separated by ``::``
    (webdataset's convention). Each entry may use brace patterns (``shard-{000..009}.tar``)
    and is then, after expansion:

    - a built dataset folder (local or URI) holding ``release.json``: its shards, as listed
      there (rejected shards excluded);
    - another local folder: the ``*.tar`` files in it, sorted;
    - a local glob pattern (``*``, ``?``, ``[``): the matching files, sorted;
    - anything else: a shard path or URI, kept as it is.

    Local paths come out absolute (Ray Train runs each worker in its own folder, where a
    relative path would not resolve); URIs and ``pipe:`` commands are left untouched.
    """
    entries = [str(s) for s in spec] if isinstance(spec, list) else str(spec).split("::")
    shards: list[str] = []
    for entry in entries:
        for item in braceexpand.braceexpand(entry.strip()):
            shards.extend(_expand_one(item))
    if not shards:
        raise ValueError(f"no shards found in {spec!r}")
    return shards


def _expand_one(item: str) -> list[str]:
    if not item.endswith(".tar"):
        folder = OutputDir.from_uri(item)
        if folder.exists(RELEASE_NAME):
            return [folder.location(entry["name"]) for entry in read_release(folder)["shards"]]
    if "://" in item or item.startswith("pipe:"):
        return [item]
    path = Path(item).expanduser().absolute()
    if path.is_dir():
        return [str(p) for p in sorted(path.glob("*.tar"))]
    if any(c in item for c in "*?["):
        return sorted(glob.glob(str(path)))
    return [str(path)]


def _open_shards(urls: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``{"url"}`` -> ``{"url", "stream"}``: webdataset's ``gopen`` for local paths and the
    schemes it knows (``pipe:``, ``http``, ``gs`` ...), pyarrow for object stores it does
    not (``s3://``, ``abfs://`` ...), with the credentials of :class:`OutputDir`."""
    for sample in urls:
        url = sample["url"]
        scheme = url.split("://", 1)[0] if "://" in url else ""
        try:
            if scheme and scheme not in wds.gopen_schemes and scheme != "file":
                parent, _, name = url.rpartition("/")
                folder = OutputDir.from_uri(parent)
                stream = folder.fs.open_input_stream(folder.path(name))
            else:
                stream = wds.gopen(url)
        except Exception as exc:
            exc.args = exc.args + (f"while opening shard {url}",)
            raise
        yield {**sample, "stream": stream}


def _every(src: Iterable[T], index: int, count: int) -> Iterator[T]:
    """Every ``count``-th element of ``src`` from ``index`` (the rank's share)."""
    return islice(src, index, None, count)


def _decode_all(src: Iterable[dict[str, Any]], decode: Callable[[dict[str, Any]], Iterable[T]]) -> Iterator[T]:
    for sample in src:
        try:
            items = list(decode(sample))
        except Exception as exc:
            exc.args = exc.args + (f"while decoding sample {sample.get('__key__')} of {sample.get('__url__')}",)
            raise
        yield from items


@dataclass(frozen=True)
class _Members:
    """``select_files`` of ``tar_file_expander``: keep the members with these suffixes."""

    wanted: frozenset[str]

    def __call__(self, fname: str) -> bool:
        return base_plus_ext(fname)[1] in self.wanted


class ShardStream(Generic[T]):
    """Items decoded from WebDataset shards: shuffled, split by rank and worker, resumable.

    Args:
        shards: shard paths or URIs (see :func:`expand_shards`).
        decode: one raw webdataset sample (``{"__key__", "json": bytes, "x.npy": bytes, ...}``,
            read with :mod:`aniportrait.format`) -> items; must be picklable when
            ``num_workers > 0`` under a spawn start method.
        seed: the seed of every shuffle.
        shuffle_buffer: items held by each worker's shuffle buffer (1 = no shuffling).
        rank, world_size: this process among the data-parallel ranks.
        position: where to resume (default: the start of epoch 0).
        epochs: stop after this epoch count (``None``: never stop).
        num_workers: DataLoader worker processes (0: decode in this process).
        members: tar member suffixes to read (``{"json", "wav2vec.npy"}``), others are skipped.
        batch_size: yield batches of this many items collated by ``collate`` (default
            ``default_collate``) in the workers, instead of single items.
    """

    def __init__(self, shards: list[str], decode: Callable[[dict[str, Any]], Iterable[T]], *, seed: int,
                 shuffle_buffer: int, rank: int = 0, world_size: int = 1, position: StreamPosition | None = None,
                 epochs: int | None = None, num_workers: int = 0, members: Collection[str] | None = None,
                 batch_size: int | None = None, collate: Callable[[list[T]], Any] | None = None,
                 prefetch_factor: int = 4) -> None:
        if not shards:
            raise ValueError("no shards to read")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.shards = list(shards)
        self.decode = decode
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.position = position or StreamPosition()
        self.epochs = epochs
        self.num_workers = num_workers
        self.members = None if members is None else frozenset(members)
        self.batch_size = batch_size
        self.collate = collate or torch.utils.data.default_collate
        self.prefetch_factor = prefetch_factor

    @property
    def split_by_shard(self) -> bool:
        """Whether ranks and workers get whole shards (else they share samples)."""
        return len(self.shards) >= self.world_size * max(1, self.num_workers)

    def epoch_pipeline(self, epoch: int) -> wds.DataPipeline:
        """The webdataset pipeline of one epoch on this rank (run it in a DataLoader)."""
        split = [partial(_every, index=self.rank, count=self.world_size), wds.split_by_worker]
        by_shard = self.split_by_shard
        return wds.DataPipeline(
            wds.SimpleShardList(self.shards, seed=f"shards-{self.seed}-{epoch}"),
            *(split if by_shard else []),
            _open_shards,
            partial(tar_file_expander, select_files=None if self.members is None else _Members(self.members)),
            group_by_keys,
            *([] if by_shard else split),
            partial(_decode_all, decode=self.decode),
            # One rng per (seed, epoch, rank); each worker shuffles its own items with a copy.
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                        rng=random.Random(f"shuffle-{self.seed}-{epoch}-{self.rank}")),
        )

    def _epoch_items(self, epoch: int) -> Iterator[Any]:
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers else {}
        # Its own generator: a DataLoader otherwise draws its workers' base seed from the
        # global torch rng, which would move the trainer's dropout masks at every epoch.
        generator = torch.Generator().manual_seed(random.Random(f"loader-{self.seed}-{epoch}-{self.rank}").getrandbits(63))
        if self.batch_size is None:
            batching = {"batch_size": None, "collate_fn": _Counted(None)}
        else:
            batching = {"batch_size": self.batch_size, "collate_fn": _Counted(self.collate)}
        loader = torch.utils.data.DataLoader(self.epoch_pipeline(epoch), generator=generator,
                                             num_workers=self.num_workers, **batching, **extra)
        return iter(loader)

    def __iter__(self) -> Iterator[Any]:
        epoch, skip = self.position.epoch, self.position.samples
        while self.epochs is None or epoch < self.epochs:
            count = 0
            for size, item in self._epoch_items(epoch):
                count += size
                if count <= skip:
                    continue
                if count - size < skip:
                    log.warning("resume position %s is inside a batch: resuming after it", self.position)
                self.position = StreamPosition(epoch, count)
                yield item
            if count == 0:
                raise ValueError(f"rank {self.rank} of {self.world_size} got no items from {len(self.shards)} "
                                 f"shard(s) in epoch {epoch} (all samples decoded to nothing?)")
            if count < skip:
                log.warning("resume position %s is past the end of epoch %d (%d items): starting epoch %d",
                            self.position, epoch, count, epoch + 1)
            epoch, skip = epoch + 1, 0
            self.position = StreamPosition(epoch, 0)


class _Counted:
    """DataLoader ``collate_fn`` returning ``(items in it, batch)``; ``None``: single items."""

    def __init__(self, collate: Callable[[list[Any]], Any] | None) -> None:
        self.collate = collate

    def __call__(self, data: Any) -> tuple[int, Any]:
        if self.collate is None:
            return 1, torch.utils.data.default_convert(data)
        return len(data), self.collate(data)


def batches(items: Iterable[Any], batch_size: int) -> Iterator[Any]:
    """Collate consecutive items into batches (``default_collate``); a short last batch is kept."""
    iterator = iter(items)
    while chunk := list(islice(iterator, batch_size)):
        yield torch.utils.data.default_collate(chunk)
