"""`organseg models list`: the model zoo with parameter counts and GFLOPs."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Inspect the model zoo (ensemble members).", no_args_is_help=True)


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
