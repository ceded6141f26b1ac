"""The Parquet manifest: exactly one row per input clip, failures included.

Rows are sorted by clip id and the file carries no timestamps, so the same build gives
the same bytes. The per-sample ``json`` member in the shards is built here too, from the
same state, so the two never disagree.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aniportrait.schema import ClipState

MANIFEST_SCHEMA = pa.schema([
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
    pa.field("face_rate", pa.float64()),
    pa.field("face_px_median", pa.float64()),
    pa.field("face_px_min", pa.float64()),
    pa.field("yaw_range_deg", pa.float64()),
    pa.field("pitch_range_deg", pa.float64()),
    pa.field("roll_range_deg", pa.float64()),
    pa.field("jitter", pa.float64()),
    pa.field("sharpness", pa.float64()),
    pa.field("brightness", pa.float64()),
    pa.field("scene_cuts", pa.list_(pa.int32())),
    pa.field("faces_max", pa.int32()),
    pa.field("second_face_rate", pa.float64()),
    pa.field("track_jumps", pa.int32()),
    pa.field("sync_offset", pa.int32()),
    pa.field("sync_conf", pa.float64()),
    pa.field("sync_score0", pa.float64()),
    pa.field("sync_note", pa.string()),
    pa.field("audio_shift_frames", pa.int32()),
    pa.field("parent_clip_id", pa.string()),
    pa.field("crop_box", pa.list_(pa.int32())),
    pa.field("source_width", pa.int32()),
    pa.field("source_height", pa.int32()),
    pa.field("source_fps", pa.float64()),
    pa.field("source_codec", pa.string()),
    pa.field("provenance", pa.string()),
])


#: Curation scores and sync facts, copied from the clip's ``info`` (see ``aniportrait.quality``).
QUALITY_COLUMNS = ("face_px_median", "face_px_min", "yaw_range_deg", "pitch_range_deg", "roll_range_deg", "jitter",
                   "sharpness", "brightness", "scene_cuts", "faces_max", "second_face_rate", "track_jumps",
                   "sync_offset", "sync_conf", "sync_score0", "sync_note",
                   "audio_shift_frames")


def manifest_row(state: ClipState, shard: str | None) -> dict[str, Any]:
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
        "frames": info.get("frames"),
        "fps": info.get("fps"),
        "duration_s": info.get("duration_s"),
        "width": info.get("width"),
        "height": info.get("height"),
        "has_audio": info.get("has_audio"),
        "audio_samples": info.get("audio_samples"),
        "audio_note": info.get("audio_note"),
        "audio_features": info.get("audio_features"),
        "audio_model": info.get("audio_model"),
        "face_rate": info.get("face_rate"),
        **{name: info.get(name) for name in QUALITY_COLUMNS},
        "parent_clip_id": record.parent_clip_id,
        "crop_box": info.get("crop_box"),
        "source_width": info.get("source_width"),
        "source_height": info.get("source_height"),
        "source_fps": info.get("source_fps"),
        "source_codec": info.get("source_codec"),
        "provenance": json.dumps(record.provenance, sort_keys=True),
    }


def manifest_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Serialise manifest rows (sorted by clip id) to Parquet bytes."""
    rows = sorted(rows, key=lambda r: r["clip_id"])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return sink.getvalue()


def sample_json(state: ClipState) -> bytes:
    """The ``json`` member of a sample: the clip's metadata and measured facts."""
    body = {
        "clip_id": state.record.clip_id,
        "record": state.record.to_dict(),
        "info": state.info,
        "members": sorted(state.outputs),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
