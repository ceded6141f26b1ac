"""The batch-inference report: ``jobs_report.parquet`` and the printed per-job throughput table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aniportrait.retarget import FPS
from aniportrait.storage import local_atomic_path
from pipelines.inference.jobs import Job

REPORT_NAME = "jobs_report.parquet"
STATUS_OK, STATUS_SKIPPED, STATUS_FAILED = "ok", "skipped", "failed"


def report_row(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    ok = result["status"] != STATUS_FAILED
    steps = result.get("step_seconds", {})
    return {
        "job_id": job.job_id, "name": job.name, "kind": job.kind, "status": result["status"],
        "error": result.get("error") or "",
        "frames": int(result["frames"]) if ok else 0,
        "fps": FPS if ok else 0.0,
        "seconds": float(result.get("seconds") or sum(steps.values())),
        "frames_per_s": float(result.get("frames_per_s") or 0.0),
        "prepare_s": float(steps.get("prepare", 0.0)),
        "motion_s": float(result.get("motion_s", 0.0)),
        "video_s": float(result.get("video_s", 0.0)),
        "encode_s": float(result.get("encode_s", 0.0)),
        "load_s": float(result.get("load_s", 0.0)),
        "pose_id": result.get("pose_id") if ok else None,  # Audio2Pose's identity; None without Audio2Pose
        "output": result.get("output", "") if ok else "",
    }


def write_report(out: str, rows: list[dict[str, Any]]) -> str:
    """``<out>/jobs_report.parquet``, one row per job in table order, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(out) / REPORT_NAME
    table = pa.Table.from_pylist(rows)
    with local_atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return str(path)


def throughput_table(result):  # (InferResult) -> rich.table.Table
    """Per job: status, frames, seconds per step and frames/s (model loading not counted)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"aniportrait-data infer ({result.models}); seconds per step", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("job", overflow="fold", min_width=16)
    for column in ("status", "frames", "prep", "motion", "video", "encode", "frames/s"):
        table.add_column(column, justify="left" if column == "status" else "right", no_wrap=True,
                         min_width=len(column))
    for row in result.rows:
        table.add_row(row["job_id"], row["status"], str(row["frames"]),
                      *(f"{row[key]:.1f}" for key in ("prepare_s", "motion_s", "video_s", "encode_s")),
                      f"{row['frames_per_s']:.2f}")
    made = [row for row in result.rows if row["status"] == STATUS_OK]
    frames = sum(row["frames"] for row in made)
    if made and result.wall_s:
        table.caption = (f"{len(made)} video(s) made, {frames} frames in {result.wall_s:.1f} s wall "
                         f"(Ray and model start-up included): {frames / result.wall_s:.2f} frames/s")
    return table
