"""The embedded ``sample`` dataset: three clips from two real talking-face videos.

Metadata in the HDTF list format (``data/sample/SAMPLE_*.txt``) and the source videos in
``data/sample/mirror/`` ship with the package, so a build of it needs no network.
Licences: the HDTF clip is CC BY 4.0, the AniPortrait demo face Apache-2.0, the lists
Apache-2.0 (attribution in ``data/sample/NOTICE.md``). Malformed entries are reported
as in :mod:`datasets_spec.hdtf`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aniportrait.schema import ClipRecord
from datasets_spec import hdtf
from datasets_spec.errors import MetadataError

DATASET = "sample"
DATA_DIR = Path(__file__).parent / "data" / "sample"


def default_mirror() -> Path:
    """The folder holding the sample's source videos."""
    return DATA_DIR / "mirror"


def prepare(
    metadata: str | Path | None = None, *, split: str = "train", errors: list[MetadataError] | None = None
) -> list[ClipRecord]:
    """The sample's clips (HDTF format, subset ``SAMPLE``), sorted by clip id; ``errors`` as in HDTF."""
    directory = DATA_DIR if metadata is None else Path(metadata)
    records = hdtf.prepare(directory, split=split, subsets=("SAMPLE",), errors=errors)
    return [dataclasses.replace(r, dataset=DATASET) for r in records]
