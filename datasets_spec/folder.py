"""``folder``: your own videos. Every video under ``--metadata DIR`` (recursively) is a source.

No list says where the clips are: ``prepare`` returns one record per video, without a
span, and the build cuts each into clips at scene cuts and where the face is lost, with
a face-centred crop per clip (:mod:`aniportrait.segment`, :mod:`pipelines.build.segment`).

A video's id is its path relative to ``DIR`` (``/``-separated) made safe by
:func:`~aniportrait.ids.safe_id`: the same on every run and machine, and different for two
different paths (a path that is not already a safe id gets a hash of itself). Hidden files
and folders (``.name``) are skipped; a file with a video extension that turns out not to
be a video gets a failed manifest row when the build scans it.

Licence: the videos are yours; the card says their terms are yours to state (and to get consent).
"""

from __future__ import annotations

from pathlib import Path

from aniportrait.ids import safe_id
from aniportrait.schema import ClipRecord
from datasets_spec.errors import MetadataError
from datasets_spec.spec import DatasetSpec, Licence, register

DATASET = "folder"
#: File extensions (lower case) taken as videos.
EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".flv", ".mts", ".m2ts", ".ts", ".3gp", ".mpg",
              ".mpeg", ".wmv")


def source_id(relative: str) -> str:
    """The id of the video at ``relative`` (a ``/``-separated path under the folder)."""
    return safe_id(relative)


def videos(directory: str | Path) -> list[str]:
    """The ``/``-separated relative paths of the videos under ``directory``, sorted."""
    root = Path(directory)
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.suffix.lower() in EXTENSIONS and path.is_file() and not any(
                part.startswith(".") for part in relative.parts):
            found.append(relative.as_posix())
    return sorted(found)


def prepare(metadata: str | Path | None = None, *, split: str = "train",
            errors: list[MetadataError] | None = None) -> list[ClipRecord]:
    """One record (no span) per video under ``metadata``, sorted by id; the build cuts the clips."""
    if metadata is None or not Path(metadata).is_dir():
        raise MetadataError("give the folder of your videos with --metadata DIR", path=Path(metadata or "."))
    records = [ClipRecord(dataset=DATASET, clip_id=source_id(rel), source_id=source_id(rel), source_url=None,
                          mirror_names=(source_id(rel),), split=split, provenance={"file": rel})
               for rel in videos(metadata)]
    return sorted(records, key=lambda r: r.clip_id)


SPEC = register(DatasetSpec(
    name=DATASET,
    prepare=prepare,
    licence=Licence("other", "your-own-videos",
                    "The clips are cut from videos you provided; their terms are yours to state. Have the consent "
                    "of every person shown before training on or sharing them."),
    citation="@misc{your_videos,\n  title={Your own videos (replace with how your recordings should be cited)}\n}",
    homepage="README.md#your-own-videos",
    mirror_naming="not used: the videos are read where they are under --metadata DIR",
    metadata_note="--metadata DIR: the folder of your videos (searched recursively)",
    automatic_clips=True,
))
