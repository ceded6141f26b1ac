"""The source datasets: one module each, registered as a :class:`DatasetSpec`.

Each dataset module has the same small API: ``prepare(metadata=None, *, split="train",
errors=None)`` returns the dataset's :class:`~aniportrait.schema.ClipRecord` list sorted
by clip id and raises :class:`MetadataError` for metadata it cannot read as a whole. A
malformed entry is appended to ``errors`` as a :class:`MetadataError` (one per clip, ids
unique among records and errors) and parsing goes on; with ``errors=None`` it raises.
The module ends with ``SPEC = register(DatasetSpec(...))`` (name, ``prepare``, licence,
citation, ...; see :mod:`datasets_spec.spec`) and is imported here, which registers it:
``DATASETS`` maps a dataset name to its spec, :func:`get` looks one up.
"""

from __future__ import annotations

from datasets_spec import celebvhq, folder, hdtf, sample, vfhq
from datasets_spec.errors import MetadataError
from datasets_spec.spec import DATASETS, DatasetSpec, Licence, UnknownDatasetError, get, register

__all__ = ["DATASETS", "DatasetSpec", "Licence", "MetadataError", "UnknownDatasetError", "celebvhq", "folder", "get",
           "hdtf", "register", "sample", "vfhq"]
