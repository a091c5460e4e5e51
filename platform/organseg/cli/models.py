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

    from organseg.cli._console import console

    print_members(rows, size, console)


_LIST_COLUMNS = ("member", "kind", "in→out", "input", "params", "GFLOPs", "loss", "weights")
# Column sets tried in turn on a terminal, widest first: a narrow terminal loses the description,
# then the least useful columns; the member name is never cut.
_TERMINAL_LAYOUTS = (
    (*_LIST_COLUMNS, "description"),
    _LIST_COLUMNS,
    ("member", "kind", "in→out", "input", "params", "GFLOPs"),
    ("member", "kind", "input", "params", "GFLOPs"),
    ("member", "params", "GFLOPs"),
)


def _list_cells(rows: list[Any], size: int) -> dict[str, list[str]]:
    return {
        "member": [r.name for r in rows],
        "kind": ["disc" if r.kind == "discriminator" else "seg" for r in rows],
        "in→out": [f"{r.in_channels}→{r.classes}" for r in rows],
        "input": ["×".join(map(str, r.patch)) if r.patch else f"{size}²" for r in rows],
        "params": [f"{r.parameters / 1e6:.2f}M" for r in rows],
        "GFLOPs": [f"{r.gflops:.1f}" for r in rows],
        "loss": [r.default_loss for r in rows],
        "weights": ["imagenet" if r.pretrainable else "scratch" for r in rows],
        "description": [r.description for r in rows],
    }


_DESCRIPTION_MIN = 24


def _natural_width(table: Any, columns: tuple[str, ...]) -> int:
    """The width ``table`` takes uncut (the description at its minimum), rendered off screen:
    rich's own measurement, not an estimate of its padding rules."""
    import io

    from rich.console import Console

    wide = Console(file=io.StringIO(), width=10_000, color_system=None)
    if "description" in columns:
        table.columns[columns.index("description")].max_width = _DESCRIPTION_MIN
    wide.print(table)
    if "description" in columns:
        table.columns[columns.index("description")].max_width = None
    return max(len(line.rstrip()) for line in wide.file.getvalue().splitlines())


def print_members(rows: list[Any], size: int, console: Any) -> None:
    """The member table in a layout that fits where it goes, never cutting a cell.

    A terminal gets the widest rich table that fits its width (the description, then columns, are
    dropped as it narrows); anything else (a pipe, a file, ``grep``) gets one member per line as
    plain aligned text, every field whole, so a line can be found and read without a terminal.
    """
    from rich import box
    from rich.table import Table

    cells = _list_cells(rows, size)
    title = (
        f"organseg members (GFLOPs of one {size}×{size} slice, or of a 3D member's "
        "z×y×x patch; 2 FLOPs per MAC)"
    )
    if not console.is_terminal:
        headers = list(cells)
        widths = [max(len(h), *(len(c) for c in cells[h])) for h in headers[:-1]]
        lines = [f"# {title}"]
        for record in [headers, *zip(*cells.values(), strict=True)]:
            fields = [f.ljust(w) for f, w in zip(record[:-1], widths, strict=True)]
            lines.append("  ".join([*fields, record[-1]]).rstrip())
        console.file.write("\n".join(lines) + "\n")
        return
    console.print(title)
    for columns in _TERMINAL_LAYOUTS:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for header in columns:
            if header == "description":
                table.add_column(header, ratio=1, min_width=_DESCRIPTION_MIN)
                continue
            width = max(len(header), *(len(c) for c in cells[header]))
            justify = "left" if header in ("member", "kind", "loss", "weights") else "right"
            table.add_column(header, justify=justify, no_wrap=True, min_width=width)
        for record in zip(*(cells[h] for h in columns), strict=True):
            table.add_row(*record)
        if _natural_width(table, columns) <= console.width:
            console.print(table)
            return
    # Narrower than even the smallest table: one member per block; a name is never folded.
    for record in zip(*cells.values(), strict=True):
        console.print(record[0], style="bold", soft_wrap=True)
        for header, value in zip(list(cells)[1:], record[1:], strict=True):
            console.print(f"  {header}: {value}")  # wraps at words like any text


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
    if shape.get("channels"):
        listed = ", ".join(f"{c['name']} ({c['modality']})" for c in shape["channels"])
        stacks += f"; {len(shape['channels'])} channels stacked: {listed}"
    label_set = described["label_set"]
    what = (
        f"CHAOS task {described['task']}"
        if label_set["name"] == "chaos"
        else f"label set {label_set['name'] or 'unnamed'}"
    )
    console.print(
        f"[bold]{described['name']}[/bold] ({what}) — version "
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
    print_label_set(label_set, console)
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


# Column sets tried in turn, widest first: a narrow terminal loses the colour, then the
# post-processing and side, then the code; the value and the name are never cut.
_LABEL_LAYOUTS = (
    ("value", "label", "colour", "code", "side", "keeps"),
    ("value", "label", "code", "side", "keeps"),
    ("value", "label", "code"),
    ("value", "label"),
)


def _label_cells(labels: list[dict]) -> dict[str, list[str]]:
    def code(c: dict) -> str:
        return f"{c['meaning']} ({c['scheme']} {c['value']})"

    return {
        "value": [str(lb["value"]) for lb in labels],
        "label": [lb["name"] for lb in labels],
        "colour": ["#{:02x}{:02x}{:02x}".format(*lb["colour"]) for lb in labels],
        "code": [code(lb["code"]) for lb in labels],
        "side": [lb["laterality"]["meaning"] if lb["laterality"] else "—" for lb in labels],
        "keeps": ["largest part" if lb["largest_component"] else "all parts" for lb in labels],
    }


def print_label_set(label_set: dict, console: Any) -> None:
    """The model's label set (:func:`organseg.ensemble.describe.describe_label_set`): what each
    voxel value of its label maps means, with its colour, code, side and post-processing, as the
    widest table that fits the console; narrower than the smallest, one label per block."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    ignore = label_set["ignore"]
    title = f"label set {label_set['name'] or '(unnamed)'}: value 0 is background"
    title += f", {ignore} is ignored in training and metrics" if ignore is not None else ""
    console.print(title, markup=False)
    cells = _label_cells(label_set["labels"])
    colours = [tuple(lb["colour"]) for lb in label_set["labels"]]
    for columns in _LABEL_LAYOUTS:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for header in columns:
            width = max(len(header), *(len(c) for c in cells[header]))
            justify = "right" if header == "value" else "left"
            table.add_column(header, justify=justify, no_wrap=True, min_width=width)
        for index, record in enumerate(zip(*(cells[h] for h in columns), strict=True)):
            # Text, not markup: a dataset's label name may hold brackets
            styled = [
                Text(cell, style="rgb({},{},{})".format(*colours[index]) if h == "colour" else "")
                for h, cell in zip(columns, record, strict=True)
            ]
            table.add_row(*styled)
        if _natural_width(table, columns) <= console.width:
            console.print(table)
            return
    for record in zip(*cells.values(), strict=True):
        console.print(f"{record[0]} {record[1]}", style="bold", soft_wrap=True, markup=False)
        for header, value in zip(list(cells)[2:], record[2:], strict=True):
            console.print(f"  {header}: {value}", markup=False)  # wraps at words like any text


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
