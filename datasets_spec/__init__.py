"""Parsers for the official metadata of the source datasets.

Each dataset module has the same small API: ``prepare(metadata=None, *, split="train",
errors=None)`` returns the dataset's :class:`~aniportrait.schema.ClipRecord` list sorted
by clip id and raises :class:`MetadataError` for metadata it cannot read as a whole. A
malformed entry is appended to ``errors`` as a :class:`MetadataError` (one per clip, ids
unique among records and errors) and parsing goes on; with ``errors=None`` it raises.
``DATASETS`` maps a dataset name to its module.
"""

from __future__ import annotations

from types import ModuleType

from datasets_spec import celebvhq, hdtf, sample, vfhq
from datasets_spec.errors import MetadataError

#: Dataset name -> parser module (each has ``prepare``).
DATASETS: dict[str, ModuleType] = {
    "hdtf": hdtf,
    "celebvhq": celebvhq,
    "vfhq": vfhq,
    "sample": sample,
}

__all__ = ["DATASETS", "MetadataError", "celebvhq", "hdtf", "sample", "vfhq"]
