"""The dataset contract: one :class:`DatasetSpec` per dataset, kept in a registry.

A dataset is one module of this package that ends with ``SPEC = register(DatasetSpec(...))``
and is imported from ``datasets_spec/__init__.py``: the build reads its clips through
``prepare``, the card its licence and citation, the CLI its default mirror, whether audio
features are on by default, and the rows of ``aniportrait-data datasets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aniportrait.schema import ClipRecord
from datasets_spec.errors import MetadataError

#: The card's note on the source videos, shared by the datasets cut from YouTube.
VIDEOS_NOTE = ("The clips are cut from YouTube videos, which keep their own terms: check them before any use "
               "beyond research, and honour takedown requests.")


class Prepare(Protocol):
    """A dataset's parser: its clip records sorted by clip id (see :mod:`datasets_spec`)."""

    def __call__(self, metadata: str | Path | None = None, *, split: str = "train",
                 errors: list[MetadataError] | None = None) -> list[ClipRecord]: ...


@dataclass(frozen=True)
class Licence:
    """How a source dataset may be used: the Hub licence id, its name (Hub ``license_name``,
    for ``other``) and the card's paragraph."""

    hub_id: str
    name: str | None
    text: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline knows about one dataset."""

    name: str
    prepare: Prepare
    licence: Licence
    #: BibTeX of the source dataset, shown on the card.
    citation: str
    homepage: str
    #: One line: how the files of a ``--mirror`` folder are named.
    mirror_naming: str
    #: One line: where the metadata comes from and whether it ships.
    metadata_note: str
    #: The mirror a build uses when no ``--mirror`` is given (the sample's shipped videos).
    default_mirror: Path | None = None
    #: Whether a build computes wav2vec2 features without ``--wav2vec2`` (needs the weights).
    audio_features_by_default: bool = True
    #: Whether ``prepare`` lists whole source videos (records without a span) that the build
    #: cuts into clips itself (:mod:`aniportrait.segment`), as the ``folder`` dataset does.
    automatic_clips: bool = False


class UnknownDatasetError(KeyError):
    """No dataset of that name is registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


#: Dataset name -> its spec, filled by :func:`register`.
DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` and return it; a name already taken raises
    ``ValueError`` unless ``replace``."""
    if spec.name in DATASETS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered (pass replace=True to replace it)")
    DATASETS[spec.name] = spec
    return spec


def get(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; raises :class:`UnknownDatasetError` naming the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}") from None
