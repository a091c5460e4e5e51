"""`organseg config`: the experiment schema for editors, and checking a config without training."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Experiment configuration: JSON Schema and validation.", no_args_is_help=True
)


@app.command("schema")
def schema_command(
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the schema to this file instead of stdout."
    ),
) -> None:
    """The JSON Schema of an experiment YAML (point an editor's YAML language server at it)."""
    from organseg.config import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


@app.command("check")
def check_command(
    config: Path = typer.Argument(..., help="Experiment YAML to validate."),
) -> None:
    """Validate CONFIG and report every problem with its file and dotted key; an nnU-Net or MSD
    dataset is read whole (every case's files, grids and label values) before anything trains."""
    from organseg.config import load_config

    loaded = load_config(config)
    if not loaded.dataset.own_labels:
        typer.echo(f"{config}: valid ({len(loaded.members)} member(s), CHAOS task {loaded.task})")
        return
    from organseg.train.data import input_channels, open_labelled_dataset

    dataset = open_labelled_dataset(loaded)  # every problem, each naming its file or key
    channels = input_channels(loaded, dataset)  # members' in_channels against stacked channels
    labels = dataset.label_set
    assert labels is not None
    ignore = f", ignore label {labels.ignore}" if labels.ignore is not None else ""
    if channels is not None:
        ignore += f", {len(channels)} channels stacked: {', '.join(c.name for c in channels)}"
    typer.echo(
        f"{config}: valid ({len(loaded.members)} member(s), {loaded.dataset.format} dataset of "
        f"{len(dataset.cases)} case(s), {len(labels)} labels{ignore}: {', '.join(labels.names)})"
    )
