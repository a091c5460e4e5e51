"""A batch run on the driver: plan (discover, resume, refuse early), run the pipeline, write the table.

Planning reads headers only and touches no output, so a usage mistake (no model, OUT written by
another model) costs nothing. A series keeps the row of its done record when a re-run finds it
complete for the same model version; everything else goes through the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from organseg.batch.discover import SeriesItem, discover
from organseg.batch.records import is_complete, load_records
from organseg.batch.rows import base_row, counts, refused_row, save_json, write_table
from organseg.batch.work import FORMATS, Carrier, Settings
from organseg.errors import OrgansegError


@dataclass
class Plan:
    settings: Settings
    items: list[SeriesItem]
    todo: list[Carrier] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)  # refused early, or resumed


def plan_run(
    input_path: Path,
    out: Path,
    model_dir: Path,
    fmt: str = "nifti",
    overwrite: bool = False,
    device: str | None = None,
) -> Plan:
    """What this run will do; raises :class:`OrgansegError` for usage mistakes before any output."""
    from organseg.ensemble.spec import load_spec
    from organseg.ensemble.version import model_version

    if fmt not in FORMATS:
        raise OrgansegError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if not Path(model_dir).is_dir():
        raise OrgansegError(f"{model_dir}: no such model directory")
    spec = load_spec(Path(model_dir))
    version = model_version(Path(model_dir)).id
    settings = Settings(
        model_dir=str(Path(model_dir).resolve()),
        out=str(Path(out).resolve()),
        fmt=fmt,
        model_version=version,
        stack_t1=spec.preprocess.t1_mode == "stack",
        with_t2=spec.preprocess.t2_channel,
        channels=tuple((c.name, c.modality.value) for c in spec.preprocess.channels or ()),
        device=device,
    )
    items = discover(
        input_path, settings.stack_t1, settings.with_t2, tuple(n for n, _ in settings.channels)
    )
    records = {} if overwrite else load_records(Path(out))
    others = sorted({r.get("model_version", "?") for r in records.values()} - {version})
    if others:
        raise OrgansegError(
            f"{out}: holds results of model {', '.join(others)}, not {version}; "
            "pass --overwrite to replace them, or choose another output folder"
        )
    served = {m.value for m in spec.modalities()}
    plan = Plan(settings, items)
    for item in items:
        reason = item.refused
        if not reason and item.modality and item.kind == "chaos" and item.modality not in served:
            reason = f"{item.modality}: the ensemble serves {', '.join(sorted(served))}"
        if not reason and fmt == "dicom-seg" and item.kind != "dicom":
            reason = "DICOM-SEG needs a DICOM source series; this input is a volume file"
        if reason:
            plan.finished.append(refused_row(item, version, fmt, reason))
            continue
        record = records.get(item.key)
        if record is not None and record.get("format") == fmt and is_complete(record, version):
            plan.finished.append({**record, "resumed": True})
            continue
        plan.todo.append(Carrier(item.as_dict(), base_row(item, version, fmt)))
    return plan


@dataclass
class Outcome:
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    resumed: int
    seconds: float
    table: tuple[Path, Path]


def execute(
    plan: Plan,
    pool: Any,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """Run the planned series on the connected Ray cluster and write the results table."""
    from organseg.batch.pipeline import run_pipeline

    started = time.perf_counter()
    rows = run_pipeline(plan.todo, plan.settings, pool, on_row)
    seconds = time.perf_counter() - started
    every = plan.finished + rows
    out = Path(plan.settings.out)
    table = write_table(out, every)
    outcome = Outcome(
        every, counts(every), sum(bool(r.get("resumed")) for r in every), seconds, table
    )
    save_json(
        out / "summary.json",
        {
            "model_version": plan.settings.model_version,
            "series": len(every),
            **outcome.counts,
            "resumed": outcome.resumed,
            "seconds": round(seconds, 3),
            "results": str(table[0]),
        },
    )
    return outcome
