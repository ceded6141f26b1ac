"""The Parquet manifest: exactly one row per input clip, failures included.

Its columns are the clip's record and facts (:data:`HEAD_COLUMNS`), one column per score
of the registry that has one (:mod:`aniportrait.scores`, in registry order: the built-in
scores, then the added ones) and the rest (:data:`TAIL_COLUMNS`). Rows are sorted by clip
id and the file carries no timestamps, so the same build gives the same bytes. The
per-sample ``json`` member in the shards is built here too, from the same state, so the
two never disagree.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aniportrait.schema import ClipState
from aniportrait.scores import SCORES, ScoreRegistry

#: The columns before the score columns: the clip's record, status and measured facts.
HEAD_COLUMNS = (
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("failed_stage", pa.string()),
    #: A short code for every row that is not ok (see ``aniportrait.reasons``).
    pa.field("reason", pa.string()),
    pa.field("shard", pa.string()),
    #: The release version in which the clip first appeared (its shards are that generation's).
    pa.field("generation", pa.int32()),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("source_url", pa.string()),
    pa.field("span_start_s", pa.float64()),
    pa.field("span_end_s", pa.float64()),
    pa.field("frames", pa.int32()),
    pa.field("fps", pa.float32()),
    pa.field("duration_s", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("has_audio", pa.bool_()),
    pa.field("audio_samples", pa.int64()),
    pa.field("audio_note", pa.string()),
    pa.field("audio_features", pa.string()),
    pa.field("audio_model", pa.string()),
)
#: The columns after the score columns: sync facts, sub-clip parent, crop and source.
TAIL_COLUMNS = (
    pa.field("sync_note", pa.string()),
    pa.field("audio_shift_frames", pa.int32()),
    pa.field("parent_clip_id", pa.string()),
    pa.field("crop_box", pa.list_(pa.int32())),
    pa.field("source_width", pa.int32()),
    pa.field("source_height", pa.int32()),
    pa.field("source_fps", pa.float64()),
    pa.field("source_codec", pa.string()),
    pa.field("provenance", pa.string()),
)
#: The ``ClipInfo`` facts copied into the manifest under their own name (beside the scores).
FACT_COLUMNS = ("frames", "fps", "duration_s", "width", "height", "has_audio", "audio_samples", "audio_note",
                "audio_features", "audio_model", "sync_note", "audio_shift_frames", "crop_box", "source_width",
                "source_height", "source_fps", "source_codec")


def manifest_schema(scores: ScoreRegistry = SCORES) -> pa.Schema:
    """The manifest's columns with a column for each score of ``scores`` that has one."""
    fields = [*HEAD_COLUMNS, *(pa.field(s.name, s.type) for s in scores if s.column), *TAIL_COLUMNS]
    names = [f.name for f in fields]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"score(s) {', '.join(clash)} would repeat a manifest column: register them under other names")
    return pa.schema(fields)


def manifest_row(state: ClipState, shard: str | None, scores: ScoreRegistry = SCORES) -> dict[str, Any]:
    """The manifest row of one clip (``shard`` is ``None`` for a clip not written)."""
    record, info = state.record, state.info
    start_s, end_s = record.time_span() if record.has_span else (None, None)
    return {
        "clip_id": record.clip_id,
        "dataset": record.dataset,
        "split": record.split,
        "status": state.status,
        "error": state.error,
        "failed_stage": state.failed_stage,
        "reason": state.reason,
        "shard": shard,
        "source_id": record.source_id,
        "source_url": record.source_url,
        "span_start_s": start_s,
        "span_end_s": end_s,
        **{name: getattr(info, name) for name in FACT_COLUMNS},
        **{score.name: score.value(info) for score in scores if score.column},
        "parent_clip_id": record.parent_clip_id,
        "provenance": json.dumps(record.provenance, sort_keys=True),
    }


def manifest_bytes(rows: list[dict[str, Any]], scores: ScoreRegistry = SCORES) -> bytes:
    """Serialise manifest rows (sorted by clip id) to Parquet bytes."""
    rows = sorted(rows, key=lambda r: r["clip_id"])
    table = pa.Table.from_pylist(rows, schema=manifest_schema(scores))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def sample_json(state: ClipState) -> bytes:
    """The ``json`` member of a sample: the clip's metadata and measured facts."""
    body = {
        "clip_id": state.record.clip_id,
        "record": state.record.to_dict(),
        "info": state.info.to_dict(),
        "members": sorted(state.outputs),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
