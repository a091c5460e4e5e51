"""Per-series done records: what makes a re-run resume, and a retried task harmless.

A record ``OUT/.organseg-batch/done/<key>.json`` is written atomically *after* the series' outputs,
so its presence means the outputs are complete. It holds the model version and the series' result
row: a re-run with the same model skips the series and reports the stored row; a run with another
model must be told (``--overwrite``) before it replaces anything.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from organseg.batch.discover import STATE_DIR

#: Statuses that are final for a model version (``failed`` is retried by the next run).
FINAL = ("done", "refused")


def done_dir(out: Path) -> Path:
    return Path(out) / STATE_DIR / "done"


def record_path(out: Path, key: str) -> Path:
    return done_dir(out) / f"{key}.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside ``path`` then rename: readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_record(out: Path, row: dict[str, Any]) -> None:
    """The series' final row, once its outputs are in place (only ``done`` and ``refused`` rows)."""
    if row.get("status") in FINAL:
        atomic_write_text(record_path(out, row["key"]), json.dumps(row, sort_keys=True) + "\n")


def load_records(out: Path) -> dict[str, dict[str, Any]]:
    """Every readable record under ``out`` by key (a damaged one is ignored: its series runs again)."""
    records = {}
    folder = done_dir(out)
    if not folder.is_dir():
        return records
    for path in folder.glob("*.json"):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(row, dict) and row.get("key") == path.stem:
            records[path.stem] = row
    return records


def is_complete(row: dict[str, Any], version: str) -> bool:
    """A record that a re-run with model ``version`` may keep: same model, final status, and for a
    ``done`` series its output still there."""
    if row.get("model_version") != version or row.get("status") not in FINAL:
        return False
    return row["status"] != "done" or Path(row.get("output") or "\0").exists()
