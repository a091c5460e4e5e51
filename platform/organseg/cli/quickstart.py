"""`organseg quickstart`: the README's main job."""

from __future__ import annotations

from pathlib import Path

import typer


def quickstart_command(
    workdir: Path = typer.Option(
        Path("organseg-quickstart"), "--workdir", help="Where everything is written."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="A dataset instead of synthetic data: a CHAOS folder, or an nnU-Net v2 / MSD dataset "
        "(trained and scored on its own labels).",
    ),
    clean: bool = typer.Option(
        False, "--clean", help="Delete the work directory first (else reuse it)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Epochs per member (default from the config)."
    ),
    size: int | None = typer.Option(
        None, "--size", min=32, help="In-plane size the members run at."
    ),
    cases: int | None = typer.Option(
        None, "--cases", min=2, help="Synthetic training patients per modality."
    ),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP port for the Serve step."),
    grpc_port: int = typer.Option(9000, "--grpc-port", help="gRPC port for the Serve step."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: a local one)."
    ),
) -> None:
    """Synthesize data, train an ensemble in parallel, evaluate it, serve it, segment over HTTP and gRPC."""
    from organseg.cli._console import err_console
    from organseg.quickstart import QuickstartOptions, run_quickstart

    options = QuickstartOptions(
        workdir=workdir,
        data=data,
        clean=clean,
        epochs=epochs,
        size=size,
        cases=cases,
        http_port=http_port,
        grpc_port=grpc_port,
        address=address,
    )
    run_quickstart(options, console=err_console)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)
