"""`organseg data synth`, `organseg data inspect` and `organseg data convert`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Create, inspect and convert datasets (CHAOS, nnU-Net v2 raw, MSD).", no_args_is_help=True
)


@app.command("synth")
def synth_command(
    out: Path = typer.Argument(..., help="Folder to write the dataset into (CHAOS layout)."),
    ct: int = typer.Option(2, "--ct", min=0, help="Number of CT cases."),
    mr: int | None = typer.Option(
        None,
        "--mr",
        min=0,
        help="Number of MR cases (T1DUAL in/out + T2SPIR); CHAOS format only (default 2).",
    ),
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
    format: str = typer.Option(
        "chaos",
        "--format",
        help="chaos: CT and MR DICOM series with PNG masks; nnunet / msd: nine-label abdominal CT "
        "(--ct cases) in the nnU-Net v2 raw or Medical Segmentation Decathlon layout.",
    ),
    venous: bool = typer.Option(
        False,
        "--venous",
        help="nnunet / msd: two CT phases per case (channels 'arterial' _0000 and 'venous' _0001, "
        "in MSD the 4th dimension; a contrast-shifted copy), a multi-channel dataset.",
    ),
) -> None:
    """Write a synthetic dataset: CHAOS layout (DICOM + PNG masks) or a nine-label nnU-Net / MSD one."""
    from organseg.errors import ConfigError

    if venous and format == "chaos":
        raise ConfigError("--venous: the two-phase synthetic dataset is nnunet or msd, not chaos")
    if format == "chaos":
        from organseg.synth import write_dataset

        mr = 2 if mr is None else mr
        root = write_dataset(
            out, ct=ct, mr=mr, size=size, slices=slices, seed=seed, overwrite=overwrite
        )
        typer.echo(f"wrote {ct} CT and {mr} MR synthetic cases under {root}")
        return
    if format not in ("nnunet", "msd"):
        raise ConfigError(f"--format: {format!r} is not one of chaos, nnunet, msd")
    if mr:
        raise ConfigError(
            f"--mr: the synthetic {format} dataset is CT only; give its cases with --ct"
        )
    from organseg.synth.abdomen import ABDOMEN_LABELS, write_abdomen_dataset

    root = write_abdomen_dataset(
        out,
        cases=ct,
        size=size,
        slices=slices,
        seed=seed,
        format=format,
        overwrite=overwrite,
        venous=venous,
    )
    typer.echo(
        f"wrote {ct} synthetic CT cases with {len(ABDOMEN_LABELS)} labels as a {format} dataset "
        f"under {root}"
    )


@app.command("inspect")
def inspect_command(
    path: Path = typer.Argument(
        ...,
        help="nnU-Net / MSD / CHAOS dataset folder, CHAOS case folder, DICOM series folder or "
        "volume file.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of records instead of a table."
    ),
) -> None:
    """Show the dataset's format (and why), every case's modality or channels, shape, spacing and
    label voxel counts, and every problem found, each naming its file or dataset.json key."""
    import json

    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.datasets import detect_format
    from organseg.io.inspect import inspect_dataset

    found = detect_format(path) if path.is_dir() else None
    if found is not None and found[0] != "chaos":
        _inspect_labelled(path, found[0], found[1], as_json)
        return
    if found is not None:  # on stderr: the CHAOS report on stdout stays as it was
        err_console.print(f"format: chaos ({found[1]})", highlight=False, soft_wrap=True)
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


def _inspect_labelled(path: Path, format: str, reason: str, as_json: bool) -> None:
    """``data inspect`` of an nnU-Net or MSD dataset: format, cases, label counts, every problem."""
    import json

    import numpy as np
    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.datasets import open_dataset

    dataset = open_dataset(path, format)
    problems = dataset.check()
    bad_files = {p.where for p in problems}
    modalities = dataset.case_modalities()[0]
    rows = []
    label_set = dataset.label_set
    for case in dataset.cases:
        if any(str(f) in bad_files for f in (*case.images, case.label)):
            continue
        loaded = dataset.load(case)
        counts = np.bincount(loaded.label.array.ravel().astype(np.int64)) if loaded.label else []
        names = {lb.value: lb.name for lb in label_set} if label_set else {}
        rows.append(
            {
                "case": case.case_id,
                "channels": list(dataset.channel_names),
                # what the router routes on ("unknown": nothing establishes it; training refuses it)
                "modality": [m.value for m in modalities[case.case_id]],
                "shape": list(loaded.image.shape),
                "spacing": [float(s) for s in loaded.image.spacing],
                "labels": {names.get(v, str(v)): int(n) for v, n in enumerate(counts) if v and n},
            }
        )
    if as_json:
        record = {
            "format": format,
            "reason": reason,
            "channels": list(dataset.channel_names),
            "labels": label_set.to_nnunet() if label_set else None,
            "cases": rows,
            "problems": [{"where": p.where, "message": p.message} for p in problems],
        }
        typer.echo(json.dumps(record, indent=2))
    else:
        typer.echo(f"format: {format} ({reason})")
        typer.echo(
            "channels: " + ", ".join(f"{i:04d} {n}" for i, n in enumerate(dataset.channel_names))
        )
        if label_set is not None:
            typer.echo(
                "labels: "
                + ", ".join(f"{lb.value} {lb.name}" for lb in label_set)
                + (f", ignore {label_set.ignore}" if label_set.ignore is not None else "")
            )
        table = Table(title=f"{path}", show_lines=False)
        for column in (
            "case",
            "channels",
            "modality",
            "shape (z,y,x)",
            "spacing (x,y,z) mm",
            "labels (voxels)",
        ):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["case"],
                ", ".join(row["channels"]),
                ", ".join(row["modality"]),
                "x".join(map(str, row["shape"])),
                ", ".join(f"{s:.7g}" for s in row["spacing"]),
                ", ".join(f"{k} {v}" for k, v in row["labels"].items()) or "-",
            )
        console.print(table)
    for problem in problems:
        err_console.print(f"[red]error:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command("convert")
def convert_command(
    src: Path = typer.Argument(..., help="CHAOS dataset (real or synthetic) to convert."),
    to: str = typer.Option(..., "--to", help="Target layout: nnunet."),
    out: Path = typer.Argument(..., help="Folder to write the dataset(s) into."),
    first_id: int = typer.Option(
        501,
        "--first-id",
        help="nnU-Net dataset id of the CT dataset; MR T1DUAL and T2SPIR get the next two.",
    ),
    file_ending: str = typer.Option(
        ".nii.gz", "--file-ending", help="File ending of the images: .nii.gz, .nii, .nrrd or .mha."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace datasets this command wrote before in OUT."
    ),
) -> None:
    """Write a CHAOS dataset in the nnU-Net v2 raw layout: one dataset per CT, MR T1DUAL (in/out
    phase as channels 0000/0001) and MR T2SPIR, with the voxels and geometry the CHAOS reader gives."""
    from organseg.datasets.convert import convert_chaos_to_nnunet
    from organseg.datasets.detect import detect_format
    from organseg.errors import ConfigError, DataError

    if to != "nnunet":
        raise ConfigError(f"--to: {to!r} is not supported; organseg converts CHAOS to nnunet")
    found = detect_format(src)
    if found is None or found[0] != "chaos":
        what = f"a {found[0]} dataset" if found else "not a dataset organseg recognises"
        raise DataError(f"{src}: {what}; convert reads CHAOS datasets")
    written = convert_chaos_to_nnunet(
        src, out, first_id=first_id, file_ending=file_ending, overwrite=overwrite
    )
    for folder in written:
        typer.echo(f"wrote {folder}")
