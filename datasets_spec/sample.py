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
from datasets_spec.spec import DatasetSpec, Licence, register

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


SPEC = register(DatasetSpec(
    name=DATASET,
    prepare=prepare,
    licence=Licence("other", "cc-by-4.0-and-apache-2.0",
                    "`Radio10` is an HDTF clip (CC BY 4.0, Zhang et al., CVPR 2021, "
                    "https://github.com/MRzzm/HDTF, YouTube id ZoRK17RCZHY); `LylTalking` is the right half of "
                    "the official AniPortrait demo asset (Apache-2.0, https://github.com/Zejun-Yang/AniPortrait). "
                    "The clip lists were written for aniportrait-data (Apache-2.0)."),
    citation=hdtf.SPEC.citation,
    homepage="datasets_spec/data/sample/NOTICE.md",
    mirror_naming="<video name>.mp4 in the shipped mirror (Radio10.mp4, LylTalking.mp4)",
    metadata_note="shipped (HDTF list format), sources shipped in data/sample/mirror/",
    default_mirror=default_mirror(),
    audio_features_by_default=False,
))
