"""`organseg data synth` and `organseg data inspect`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Create and inspect CHAOS-layout datasets.", no_args_is_help=True)


@app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (CHAOS layout)."),
    ct: int = typer.Option(2, "--ct", min=0, help="Number of CT cases."),
    mr: int = typer.Option(2, "--mr", min=0, help="Number of MR cases (T1DUAL in/out + T2SPIR)."),
    size: int = typer.Option(
        128, "--size", min=32, max=1024, help="In-plane size in pixels (square), 32-1024."
    ),
    slices: int | None = typer.Option(
        None,
        "--slices",
        min=4,
        max=512,
        help="Slices per series, 4-512 (default scales with size).",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Random seed; the same seed gives the same dataset."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing dataset in OUT."
    ),
) -> None:
    """Write a synthetic CHAOS-layout dataset of real DICOM series and PNG masks."""
    from organseg.synth import write_dataset

    root = write_dataset(
        out, ct=ct, mr=mr, size=size, slices=slices, seed=seed, overwrite=overwrite
    )
    typer.echo(f"wrote {ct} CT and {mr} MR synthetic cases under {root}")


@app.command("inspect")
def inspect_command(
    path: Path = typer.Argument(
        ..., help="CHAOS dataset/case folder, DICOM series folder or volume file."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of records instead of a table."
    ),
) -> None:
    """Show every case's modality, shape, spacing, slice count and organ voxel counts, with warnings."""
    import json

    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.io.inspect import inspect_dataset

    reports = inspect_dataset(path)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        table = Table(title=f"{path}", show_lines=False)
        for column in (
            "case",
            "modality",
            "shape (z,y,x)",
            "spacing (x,y,z) mm",
            "slices",
            "organs (voxels)",
        ):
            table.add_column(column)
        for r in reports:
            table.add_row(
                r.case,
                r.modality,
                "x".join(map(str, r.shape)) if r.shape else "-",
                ", ".join(f"{s:.7g}" for s in r.spacing) if r.spacing else "-",
                str(r.slices or "-"),
                ", ".join(f"{k} {v}" for k, v in r.organs.items()) or "-",
            )
        console.print(table)
    for r in reports:
        for message in r.warnings:
            err_console.print(f"[yellow]warning:[/] {r.case}: {message}", highlight=False)
        if r.error:
            err_console.print(f"[red]error:[/] {r.case}: {r.error}", highlight=False)
    if any(r.error for r in reports):
        raise typer.Exit(1)
