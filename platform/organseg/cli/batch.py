"""`organseg batch`: segment every series of an archive on a Ray cluster and tabulate the results.

Exit code 0: every series done; 1: some refused or failed (the table says which and why); 2: a usage
error, nothing written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

EXIT_SOME_NOT_DONE = 1


def batch_command(
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="DICOM folder tree (e.g. a PACS export), CHAOS or nnU-Net dataset, folder of "
        "NIfTI/MHA/NRRD files, or a CSV manifest of paths or URIs.",
    ),
    out: Path = typer.Option(
        ..., "--output", "-o", help="Output folder (labels/, results.parquet, results.csv)."
    ),
    model: Path = typer.Option(..., "--model", help="Model directory (as `predict --local`)."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to use: auto, ray://HOST:10001 (default: a local Ray)."
    ),
    gpus_per_worker: float | None = typer.Option(
        None,
        "--gpus-per-worker",
        min=0.0,
        help="GPU share of each predicting actor (default: 1 when the cluster has GPUs, else 0).",
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="Predicting actors: N or MIN-MAX (default: 1 to as many as the GPUs allow).",
    ),
    cpus_per_worker: float = typer.Option(
        1.0,
        "--cpus-per-worker",
        min=0.1,
        help="CPUs each predicting actor reserves (more: fewer actors per node; reading and "
        "writing series need CPUs too).",
    ),
    fmt: str = typer.Option("nifti", "--format", help="nifti, dicom-seg or png."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Redo every series, replacing earlier outputs (also another model's).",
    ),
) -> None:
    """Segment every series under INPUT with a Ray Data pipeline; one results row per series.

    A re-run skips series already done with the same model version. Exit code 0: all done; 1: some
    refused or failed (see results.csv); 2: usage error.
    """
    from organseg.batch.run import plan_run

    pool_args = (gpus_per_worker, workers, cpus_per_worker)
    plan = plan_run(input_path, out, model, fmt, overwrite)
    outcome = _run(plan, address, *pool_args)
    _summarize(outcome)
    if outcome.counts["refused"] or outcome.counts["failed"]:
        raise typer.Exit(EXIT_SOME_NOT_DONE)


def _run(
    plan,
    address: str | None,
    gpus_per_worker: float | None,
    workers: str | None,
    cpus_per_worker: float,
):
    """Ray for the run (joined, or a local one started and stopped), then the pipeline."""
    from organseg.batch.pipeline import pool_size
    from organseg.batch.run import execute
    from organseg.cli._console import err_console
    from organseg.runtime import ray_session

    with ray_session(address):
        return _execute(
            plan, pool_size(gpus_per_worker, workers, cpus_per_worker), execute, err_console
        )


def _execute(plan, pool, execute, err_console):
    """The pipeline under a live progress display (done / refused / failed, series per minute)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tally = {"done": 0, "refused": 0, "failed": 0}
    for row in plan.finished:
        tally[row["status"]] += 1
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]segmenting[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(
            "batch", total=len(plan.items), completed=len(plan.finished), tally=_tally(tally, 0.0)
        )

        def on_row(row: dict[str, Any]) -> None:
            tally[row["status"]] += 1
            minutes = (time.perf_counter() - started) / 60
            progress.update(
                task, advance=1, tally=_tally(tally, sum(tally.values()) / max(minutes, 1e-9))
            )

        return execute(plan, pool, on_row)


def _tally(tally: dict[str, int], per_minute: float) -> str:
    return (
        f"[green]{tally['done']} done[/] [yellow]{tally['refused']} refused[/] "
        f"[red]{tally['failed']} failed[/] {per_minute:.1f}/min"
    )


def _summarize(outcome) -> None:
    from rich.table import Table

    from organseg.cli._console import console, err_console

    table = Table(title="organseg batch", show_lines=False)
    for name in ("status", "series", "of which resumed"):
        table.add_column(name)
    for status, n in outcome.counts.items():
        resumed = sum(1 for r in outcome.rows if r["status"] == status and r.get("resumed"))
        table.add_row(status, str(n), str(resumed))
    console.print(table)
    for row in outcome.rows:
        if row["status"] != "done":
            err_console.print(
                f"[yellow]{row['status']}:[/] {row['source']} {row['series']}: {row['reason']}",
                highlight=False,
                soft_wrap=True,
            )
    console.print(
        f"results: {outcome.table[0]} and {outcome.table[1]}", highlight=False, soft_wrap=True
    )


def register(app: typer.Typer) -> None:
    app.command("batch")(batch_command)
