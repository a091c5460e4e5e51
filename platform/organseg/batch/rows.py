"""The results table: one row per series, written as Parquet and CSV.

Rows name series by input path, URI, CHAOS case or SeriesInstanceUID, never by anything of the
patient's: no names, IDs or birth dates are ever read into a row. Per-label volumes and uncertainty
become one column each (``volume_ml.liver``, ``uncertainty.liver``), so the table loads straight into
pandas or a spreadsheet.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from organseg.batch.discover import STATE_DIR, SeriesItem
from organseg.batch.records import atomic_write_text

STATUSES = ("done", "refused", "failed")

#: Fixed columns, in table order (per-label columns follow).
COLUMNS: tuple[str, ...] = (
    "key", "source", "series_uid", "series", "status", "reason", "request_id", "output", "format",
    "modality", "modality_reason", "modality_source", "modality_confidence", "model_version",
    "members", "flags", "read_s", "predict_s", "write_s", "node_id", "resumed",
)  # fmt: skip


def base_row(item: SeriesItem, model_version: str, fmt: str) -> dict[str, Any]:
    """A row for ``item`` before anything is known beyond discovery."""
    return {
        "key": item.key,
        "source": item.source,
        "series_uid": item.series_uid,
        "series": item.label or item.case_id,
        "status": "",
        "reason": "",
        "request_id": "",
        "output": "",
        "format": fmt,
        "modality": item.modality,
        "modality_reason": "",
        "modality_source": "",
        "modality_confidence": None,
        "model_version": model_version,
        "members": "",
        "flags": "",
        "read_s": None,
        "predict_s": None,
        "write_s": None,
        "node_id": "",
        "resumed": False,
    }


def refused_row(item: SeriesItem, model_version: str, fmt: str, reason: str) -> dict[str, Any]:
    return {**base_row(item, model_version, fmt), "status": "refused", "reason": reason}


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k not in COLUMNS})
    return [*COLUMNS, *extra]


def write_table(out: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``OUT/results.parquet`` and ``OUT/results.csv`` (atomically), rows in source order."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = table_columns(rows)
    ordered = sorted(rows, key=lambda r: (r["source"], r["series"], r["key"]))
    data = {c: [r.get(c) for r in ordered] for c in columns}
    types = {c: pa.float64() for c in columns if c.endswith("_s") or "." in c}
    types["modality_confidence"] = pa.float64()
    types["resumed"] = pa.bool_()
    schema = pa.schema([(c, types.get(c, pa.string())) for c in columns])
    table = pa.table(
        {
            c: pa.array(v if c in types else [_text(x) for x in v], type=schema.field(c).type)
            for c, v in data.items()
        },
        schema=schema,
    )
    out = Path(out)
    parquet, csv_path = out / "results.parquet", out / "results.csv"
    staging = out / STATE_DIR
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / "results.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(parquet)
    tmp_csv = staging / "results.csv.tmp"
    pacsv.write_csv(table, tmp_csv)
    tmp_csv.replace(csv_path)
    return parquet, csv_path


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows of each status (all three present, zero or not)."""
    found = Counter(r["status"] for r in rows)
    return {s: found.get(s, 0) for s in STATUSES}


def save_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
