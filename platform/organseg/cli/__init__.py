"""The ``organseg`` command line.

Each command group lives in its own module and imports heavy libraries (torch, Ray) inside its
functions, so ``organseg --help`` stays instant. User mistakes surface as :class:`OrgansegError`
and are printed as one readable line, never as a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

# Before torch loads: OpenMP threads that spin while waiting collapse throughput on a busy machine
# (observed 30-50x slower on 2 shared cores); passive waiting costs little when the machine is idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click
import typer

from organseg.cli import config, data, dicom, evaluate, models, predict, quickstart, serve, train
from organseg.cli._console import err_console
from organseg.cli.batch import register as register_batch
from organseg.errors import OrgansegError, RunError

# typer ≥ 0.25 vendors its own click; catch both its exceptions and click's (older typer uses click's).
_USAGE_ERRORS = tuple(
    {click.ClickException, getattr(typer, "TyperException", click.ClickException)}
)
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})

app = typer.Typer(
    name="organseg",
    help="Train, tune, evaluate and serve CHAOS organ-segmentation ensembles on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(dicom.app, name="dicom")
evaluate.register(app)
train.register(app)
predict.register(app)
register_batch(app)
serve.register(app)
quickstart.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a skipped file, a single-patient split) as one readable line, without source locations."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and turn user errors into one-line messages."""
    warnings.showwarning = _show_warning
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="organseg", standalone_mode=False)
    except _ABORTS:
        err_console.print("aborted")
        sys.exit(130)
    except _USAGE_ERRORS as exc:
        if not hasattr(
            exc, "show"
        ):  # TyperException subclasses without a usage message (Exit is handled by main)
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except OrgansegError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1 if isinstance(exc, RunError) else 2)  # 1: the run failed; 2: bad input
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
