"""`organseg models`: the model zoo (`list`) and what a trained model directory holds (`show`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Inspect the model zoo (ensemble members) and trained model directories.",
    no_args_is_help=True,
)


@app.command("list")
def list_command(
    size: int = typer.Option(
        512, "--size", min=32, help="Square input size for the GFLOPs column."
    ),
    classes: int = typer.Option(4, "--classes", min=1, help="Output organ channels of segmenters."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """Every registered member with its parameter count and forward GFLOPs at SIZE×SIZE."""
    from organseg.errors import ConfigError
    from organseg.models.summary import summarize_members

    if size % 32:
        raise ConfigError(f"--size must be a multiple of 32 (five 2× poolings), got {size}")
    rows = summarize_members(size=size, classes=classes)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return

    from rich import box
    from rich.table import Table

    from organseg.cli._console import console

    table = Table(
        title=(
            f"organseg members (GFLOPs of one {size}×{size} slice, or of a 3D member's "
            "z×y×x patch; 2 FLOPs per MAC)"
        ),
        box=box.SIMPLE_HEAD,
    )
    for header, justify in [
        ("member", "left"),
        ("kind", "left"),
        ("in→out", "right"),
        ("input", "right"),
        ("params", "right"),
        ("GFLOPs", "right"),
        ("loss", "left"),
        ("weights", "left"),
    ]:
        table.add_column(header, justify=justify, no_wrap=True)
    table.add_column("description", ratio=1)
    for r in rows:
        table.add_row(
            r.name,
            "disc" if r.kind == "discriminator" else "seg",
            f"{r.in_channels}→{r.classes}",
            "×".join(map(str, r.patch)) if r.patch else f"{size}²",
            f"{r.parameters / 1e6:.2f}M",
            f"{r.gflops:.1f}",
            r.default_loss,
            "imagenet" if r.pretrainable else "scratch",
            r.description,
        )
    console.print(table)


@app.command("show")
def show_command(
    model_dir: Path = typer.Argument(..., help="A model directory written by `organseg train`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """What MODEL_DIR serves: version, input, the ensemble of each modality, every member with its
    validation Dice, and whether its modality classifier may route headerless volumes (default gate)."""
    from organseg.ensemble.describe import describe_model_dir

    described = describe_model_dir(model_dir)
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return

    from rich import box
    from rich.table import Table

    from organseg.cli._console import console

    shape = described["input"]
    served = {row["modality"] for row in described["ensembles"]}
    stacks = ""
    if served & {"MR-T1-in", "MR-T1-out"}:
        stacks = "; MR T1 " + ("in+out stacked" if shape["t1_mode"] == "stack" else "per phase")
        stacks += " + T2-SPIR registered" if shape["t2_channel"] else ""
    console.print(
        f"[bold]{described['name']}[/bold] (CHAOS task {described['task']}) — version "
        f"{described['model_version']}, created {described['created']} by organseg "
        f"{described['organseg_version']}; organs {', '.join(described['organs'])}; "
        f"input {shape['size']}²{stacks}"
    )
    ensembles = Table(title="ensembles", box=box.SIMPLE_HEAD)
    for header in ("modality", "members", "organs"):
        ensembles.add_column(header)
    for row in described["ensembles"]:
        ensembles.add_row(row["modality"], ", ".join(row["members"]), ", ".join(row["organs"]))
    console.print(ensembles)
    console.print(_members_table(described["members"]))
    classifier = described["modality_classifier"]
    if classifier is None:
        console.print("modality classifier: none (headerless volumes need an explicit modality)")
    elif classifier["used"]:
        console.print(
            f"{classifier['summary']}\nroutes headerless volumes at confidence ≥ "
            f"{classifier['min_confidence']:g} (default gate)"
        )
    else:
        console.print(
            f"{classifier['summary']}\nnot used under the default gate: {classifier['why_not']}"
        )


def _members_table(rows: list[dict]) -> Any:
    """One row per member; nothing is cut (a truncated member name is useless): one modality per
    line, and the folds column only when a member is a k-fold ensemble."""
    from rich import box
    from rich.table import Table

    cells: dict[str, list[str]] = {
        "member": [m["name"] for m in rows],
        "arch": [f"{m['arch']} ({m['kind']})" for m in rows],
        "in": [str(m["in_channels"]) for m in rows],
        "folds": [str(m["folds"] or "—") for m in rows],
        "val Dice": ["—" if m["val_dice"] is None else f"{m['val_dice']:.3f}" for m in rows],
        "epoch": ["—" if m["epoch"] is None else str(m["epoch"]) for m in rows],
        "modalities": ["\n".join(m["modalities"]) for m in rows],
    }
    if not any(m["folds"] for m in rows):
        del cells["folds"]
    table = Table(title="members", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, column in cells.items():
        width = max(len(line) for cell in column for line in cell.splitlines())
        justify = "left" if header in ("member", "arch", "modalities") else "right"
        table.add_column(header, justify=justify, no_wrap=True, min_width=max(len(header), width))
    for row in zip(*cells.values(), strict=True):
        table.add_row(*row)
    return table
