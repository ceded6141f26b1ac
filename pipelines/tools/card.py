"""The dataset card of a build: ``README.md`` with the Hugging Face YAML header, and plots.

:func:`write_card` reads ``release.json``, ``manifest.parquet`` and a bounded sample of
the shards, and writes ``README.md`` plus ``card/*.png`` (see :mod:`pipelines.tools.card_plots`)
through :class:`~aniportrait.storage.OutputDir`, so it works on ``s3://`` too and every
file appears only when complete. Nothing in the card depends on the time or the
machine: the same release gives the same ``README.md`` bytes.

The YAML header points the Hub's ``configs`` at the ``*.tar`` shards, so the dataset
viewer and ``datasets.load_dataset`` use the WebDataset loader.
"""

from __future__ import annotations

import io
import json
import re
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

import datasets_spec
from aniportrait.format import (
    AUDIO,
    LANDMARKS,
    MEMBERS_BY_NAME,
    META,
    POSE_VIDEO,
    VIDEO,
    iter_samples,
    member_bytes,
    read_array,
    read_manifest,
    read_meta,
    read_release,
)
from aniportrait.storage import OutputDir
from datasets_spec.spec import VIDEOS_NOTE, Licence
from aniportrait.scores import SCORES, ScoreRegistry
from pipelines.tools.card_plots import (
    PLOT_NAMES,
    Plot,
    ShardFrames,
    column,
    failure_counts,
    make_plots,
    read_shard_frames,
)

README_NAME = "README.md"
PLOTS_DIR = "card"
STATUSES = ("ok", "failed", "filtered")
FAILURE_ROWS = 20
_SHARD_NAME = re.compile(r"^(.+)-\d{6}\.tar$")


#: The licence of a release whose dataset is not registered.
UNKNOWN_LICENCE = Licence("other", "see-source", "Check the licence of the source dataset and videos. " + VIDEOS_NOTE)

ANIPORTRAIT_BIBTEX = """@misc{wei2024aniportrait,
  title={AniPortrait: Audio-Driven Synthesis of Photorealistic Portrait Animations},
  author={Huawei Wei and Zejun Yang and Zhisheng Wang},
  year={2024},
  eprint={2403.17694},
  archivePrefix={arXiv},
  primaryClass={cs.CV}
}"""


@dataclass(frozen=True)
class CardResult:
    """Where :func:`write_card` wrote the card and which plots it holds."""

    readme: str
    plots: list[str]


def size_category(count: int) -> str:
    """The Hub's ``size_categories`` value for ``count`` samples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((label for bound, label in bounds if count < bound), "n>1T")


def human_size(size: int) -> str:
    """``size`` bytes in B, KiB, MiB, GiB or TiB."""
    if size < 1024:
        return f"{size} B"
    value, unit = float(size), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def shard_patterns(names: list[str]) -> list[str]:
    """Glob patterns that match exactly these shards' families: ``{prefix}-[0-9]*.tar`` per
    prefix, so ``sample-train-[0-9]*.tar`` leaves out ``sample-train-rejected-*`` and
    ``sample-train-v002-*`` (which get patterns of their own)."""
    patterns = set()
    for name in names:
        match = _SHARD_NAME.match(name)
        patterns.add(f"{match.group(1)}-[0-9]*.tar" if match else name)
    return sorted(patterns)


def yaml_header(release: dict[str, Any], samples: int) -> str:
    """The Hugging Face metadata block, shards wired to the WebDataset loader (clips a
    curation rule rejected, when shipped, are a second config ``rejected``)."""
    dataset, split = release["dataset"], release["split"]
    licence = dataset_licence(dataset)
    lines = ["---", f"pretty_name: {_q(f'AniPortrait training clips ({dataset})')}", f"license: {licence.hub_id}"]
    if licence.name:
        lines.append(f"license_name: {licence.name}")
    lines += ["task_categories:", "- image-to-video", "tags:"]
    lines += [f"- {tag}" for tag in ("webdataset", "talking-face", "portrait-animation", "audio-driven",
                                     "face-landmarks", "mediapipe", "aniportrait", dataset)]
    lines += ["size_categories:", f"- {size_category(samples)}", "configs:"]
    configs = [("default", release["shards"]), ("rejected", release.get("rejected_shards") or [])]
    for name, shards in configs:
        if shards or name == "default":
            patterns = shard_patterns([s["name"] for s in shards]) or [f"{dataset}-{split}-[0-9]*.tar"]
            lines += [f"- config_name: {name}", "  data_files:", f"  - split: {split}", "    path:",
                      *(f"    - {_q(p)}" for p in patterns)]
    return "\n".join(lines + ["---"]) + "\n"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines + [""]


def summary_section(release: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    statuses = sorted({r["status"] for r in rows} - set(STATUSES))
    by_status = [(f"clips {status}", sum(r["status"] == status for r in rows)) for status in (*STATUSES, *statuses)]
    ok = [r for r in rows if r["status"] == "ok"]
    seconds = sum(r.get("duration_s") or 0.0 for r in ok)
    shards = release["shards"]
    total = sum(s["size"] for s in shards) + release["manifest"]["size"]
    facts = [("clips (manifest rows)", len(rows)), *by_status,
             ("frames", sum(int(r.get("frames") or 0) for r in ok)), ("hours", f"{seconds / 3600:.3f}"),
             ("shards", len(shards)), ("total size (shards + manifest)", human_size(total))]
    rejected = release.get("rejected_shards") or []
    if rejected:
        facts.append(("rejected clips shipped (config `rejected`)",
                      f"{sum(s['samples'] for s in rejected)} in {len(rejected)} shard(s)"))
    return ["## Summary", "", *_table(("", "count"), facts)]


def build_section(release: dict[str, Any]) -> list[str]:
    lines = ["## How it was built", "",
             f"Built with `aniportrait-data build --dataset {release['dataset']}` (release format "
             f"`{release.get('format', '?')}`, version {release.get('version', 1)}), config hash "
             f"`{release['config_hash']}`. The same metadata, "
             "config and tool versions give the same bytes; `aniportrait-data verify` re-checks every "
             "shard's sha256 and sample count against `release.json`.", "",
             "```json", json.dumps(release.get("config", {}), sort_keys=True, indent=2), "```", ""]
    models = release.get("models") or {}
    if models:
        described = [(stage, ", ".join(f"{key} `{value}`" for key, value in sorted(info.items())))
                     for stage, info in sorted(models.items())]
        lines += _table(("stage", "model"), described)
    lines += _table(("tool", "version"), sorted((release.get("tools") or {}).items()))
    return lines


def _member_detail(sample: dict[str, Any], name: str, info: dict[str, Any]) -> str:
    """Shape and type of one member of ``sample``, as measured (the frame count shown as T)."""
    member = MEMBERS_BY_NAME.get(name)
    if member is not None and member.is_array:
        array = read_array(sample, member)
        shape = ["T" if i == 0 and size == info.get("frames") else str(size) for i, size in enumerate(array.shape)]
        return f"({', '.join(shape)}{',' if len(shape) == 1 else ''}) {array.dtype}"
    if member in (VIDEO, POSE_VIDEO):
        return f"{info.get('width')}x{info.get('height')}, {info.get('fps')} fps"
    if member == AUDIO:
        with wave.open(io.BytesIO(member_bytes(sample, AUDIO))) as reader:
            return f"{reader.getframerate()} Hz, {reader.getnchannels()} channel(s), {8 * reader.getsampwidth()}-bit"
    return META.dtype if member == META else f"{len(sample[name])} bytes"


def members_section(sample: dict[str, Any] | None) -> list[str]:
    lines = ["## Members of a sample", ""]
    if sample is None:
        return lines + ["The release has no samples.", ""]
    info = read_meta(sample).get("info", {})
    lines += [f"Each sample is one clip; its key is the clip id (first sample: `{sample['__key__']}`). "
              "T is the clip's frame count.", ""]
    members = sorted(k for k in sample if not k.startswith("__"))
    return lines + _table(("member", "content", "description"),
                          [(f"`{m}`", _member_detail(sample, m, info),
                            MEMBERS_BY_NAME[m].meaning if m in MEMBERS_BY_NAME else "") for m in members])


def scores_section(rows: list[dict[str, Any]], scores: ScoreRegistry = SCORES) -> list[str]:
    """The registered scores the kept clips have values of: meaning, unit, clips and median."""
    measured = [(score, column(rows, score.name)) for score in scores if score.numeric and score.derive is None]
    measured = [(score, values) for score, values in measured if len(values)]
    lines = ["## Scores", ""]
    if not measured:
        return lines + ["No kept clip has a score.", ""]
    lines += ["Per-clip scores of the kept clips, each a column of `manifest.parquet` and a key of the sample's "
              "`json` `info` (added scores under `info.scores`); `--filter` rules can name them.", ""]
    return lines + _table(("score", "unit", "meaning", "clips", "median"),
                          [(f"`{score.name}`", score.unit, score.meaning, len(values), f"{np.median(values):.4g}")
                           for score, values in measured])


def plots_section(plots: list[Plot], plots_dir: str) -> list[str]:
    lines = ["## Plots", ""]
    if not plots:
        return lines + ["No plot: the release has no kept clip.", ""]
    for plot in plots:
        lines += [f"### {plot.title}", "", f"![{plot.title}]({plots_dir}/{plot.name})", "", plot.caption, ""]
    return lines


def failures_section(rows: list[dict[str, Any]]) -> list[str]:
    counts = failure_counts(rows)
    lines = ["## Failure reasons", ""]
    if not counts:
        return lines + ["Every clip of the metadata is in the shards.", ""]
    lines += ["Numbers in the messages are shown as N so that alike failures group together; every clip's exact "
              "reason is in `manifest.parquet` (`status`, `failed_stage`, `error`).", ""]
    shown = counts[:FAILURE_ROWS]
    if len(counts) > FAILURE_ROWS:
        shown.append((f"{len(counts) - FAILURE_ROWS} other reasons", sum(c for _, c in counts[FAILURE_ROWS:])))
    return lines + _table(("clips", "reason"), [(count, reason) for reason, count in shown])


def loading_section(release: dict[str, Any]) -> list[str]:
    split = release["split"]
    patterns = shard_patterns([s["name"] for s in release["shards"]]) or [f"{release['dataset']}-{split}-[0-9]*.tar"]
    return ["## How to load", "", "With [webdataset](https://github.com/webdataset/webdataset):", "", "```python",
            "import glob, io, json", "import numpy as np", "import webdataset as wds", "",
            f"shards = sorted(f for pattern in {json.dumps(patterns)} for f in glob.glob(pattern))",
            'for sample in wds.WebDataset(shards, shardshuffle=False):',
            f'    meta = json.loads(sample["{META.name}"])',
            f'    lmks = np.load(io.BytesIO(sample["{LANDMARKS.name}"]))  # {LANDMARKS.shape_text}', "```", "",
            "With Hugging Face `datasets` (the WebDataset loader decodes `.json` and `.npy` members; "
            "`mp4` and `wav` members decode with `torchcodec` installed):", "", "```python",
            "from datasets import load_dataset", "",
            f'ds = load_dataset("webdataset", data_files={{"{split}": {json.dumps(patterns)}}},',
            f'                  split="{split}", streaming=True)',
            "```", "",
            "`manifest.parquet` has one row per clip of the metadata, failures included; `release.json` lists "
            "every shard with its sha256, size and sample count.", ""]


def dataset_licence(dataset: str) -> Licence:
    """The registered dataset's licence, or :data:`UNKNOWN_LICENCE`."""
    spec = datasets_spec.DATASETS.get(dataset)
    return spec.licence if spec else UNKNOWN_LICENCE


def licence_section(dataset: str) -> list[str]:
    licence = dataset_licence(dataset)
    return ["## Licence and attribution", "", licence.text, "",
            "Landmarks, mesh and blendshapes come from the MediaPipe FaceLandmarker (Apache-2.0, Google LLC).", ""]


def citation_section(dataset: str) -> list[str]:
    lines = ["## Citation", "", "The data layout follows AniPortrait:", "", "```bibtex", ANIPORTRAIT_BIBTEX, "```", ""]
    spec = datasets_spec.DATASETS.get(dataset)
    if spec:
        lines += ["Source dataset:", "", "```bibtex", spec.citation, "```", ""]
    return lines


def render_readme(release: dict[str, Any], rows: list[dict[str, Any]], sample: dict[str, Any] | None,
                  plots: list[Plot], plots_dir: str = PLOTS_DIR) -> str:
    """The whole ``README.md`` text (no timestamps: same inputs, same text)."""
    dataset, split = release["dataset"], release["split"]
    samples = sum(s["samples"] for s in release["shards"])
    body = [f"# AniPortrait training clips: {dataset} ({split})", "",
            "Talking-face clips prepared for AniPortrait training (audio-driven portrait animation): per clip a "
            "face-crop video, its audio, MediaPipe landmarks, head pose, blendshapes and a rendered pose video, "
            f"packed as WebDataset shards: {samples} samples in {len(release['shards'])} shard(s).", "",
            *summary_section(release, rows), *build_section(release), *members_section(sample),
            *scores_section(rows), *plots_section(plots, plots_dir), *failures_section(rows), *loading_section(release),
            *licence_section(dataset), *citation_section(dataset)]
    return yaml_header(release, samples) + "\n" + "\n".join(body).rstrip("\n") + "\n"


def write_card(out_uri: str, dest_uri: str | None = None) -> CardResult:
    """Write ``README.md`` and ``card/*.png`` for the build at ``out_uri`` (into ``dest_uri``
    when given, else next to the shards); return where they went."""
    out = OutputDir.from_uri(out_uri)
    release = read_release(out)
    rows = read_manifest(out).to_pylist()
    names = [s["name"] for s in release["shards"]]
    sample = next(iter_samples(out_uri, names[:1]), None)
    frames = read_shard_frames(out_uri, names) if names else ShardFrames()
    plots = make_plots(rows, frames)
    dest = OutputDir.from_uri(dest_uri) if dest_uri else out
    plot_dir = OutputDir(dest.fs, dest.path(PLOTS_DIR))
    plot_dir.makedirs()
    for plot in plots:
        plot_dir.write_bytes(plot.name, plot.png)
    for stale in set(PLOT_NAMES) - {p.name for p in plots}:
        plot_dir.delete(stale)
    dest.write_bytes(README_NAME, render_readme(release, rows, sample, plots).encode())
    return CardResult(readme=_where(dest, README_NAME), plots=[_where(plot_dir, p.name) for p in plots])


def _where(folder: OutputDir, name: str) -> str:
    """``name`` in ``folder`` as a user would write it (a path, or a URI off the local disk)."""
    return folder.path(name) if folder.is_local else f"{folder.fs.type_name}://{folder.path(name)}"

