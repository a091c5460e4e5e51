"""`organseg train` and `organseg tune`."""

from __future__ import annotations

from pathlib import Path

import typer


def _load(
    config: Path,
    output: Path | None,
    overrides: list[str] | None = None,
    mlflow: str | None = None,
):
    """Load the config, applying ``--set key.path=value`` overrides (values parse as YAML) and
    ``--mlflow URI`` (checked to have its client installed before anything trains)."""
    import yaml

    from organseg.config import load_config
    from organseg.errors import ConfigError

    parsed = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value)
    cfg = load_config(config, overrides=parsed)
    if output is not None:
        cfg.output = output.resolve()
    if mlflow is not None:
        cfg.tracking.mlflow_uri = mlflow
    if cfg.tracking.mlflow_uri:
        from organseg.train.tracking import require_mlflow

        require_mlflow(cfg.tracking.mlflow_uri)
    return cfg


def _given_paths(config: Path, overrides: list[str] | None):
    """The config's paths as written (with ``--set`` overrides), for a best config that keeps them."""
    import yaml

    from organseg.config import read_yaml
    from organseg.train.tune import GivenPaths

    data = read_yaml(config, "config file")
    data = data if isinstance(data, dict) else {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in ("storage_path", "output"):
            data[key] = yaml.safe_load(value)
        elif key in ("dataset.path", "dataset.cache_dir"):
            data.setdefault("dataset", {})[key.split(".")[1]] = yaml.safe_load(value)
    return GivenPaths.of(data, config.parent)


def train_command(
    config: Path = typer.Argument(..., help="Experiment YAML (see configs/)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Model directory to write (default from the config)."
    ),
    member: list[str] | None = typer.Option(
        None, "--member", "-m", help="Train only this member (repeatable)."
    ),
    restart: bool = typer.Option(
        False, "--restart", help="Discard earlier runs of these members and start over."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS or local)."
    ),
    overrides: list[str] | None = typer.Option(
        None,
        "--set",
        help="Override a config key (value parsed as YAML), e.g. --set storage_path=s3://b/runs.",
    ),
    autoscaling: bool | None = typer.Option(
        None,
        "--autoscaling/--no-autoscaling",
        help="Whether the cluster can add nodes (default: detected). Without, members that can never "
        "be placed fail at once; with, the command waits for them up to --resource-wait.",
    ),
    resource_wait: float = typer.Option(
        600.0, "--resource-wait", help="Seconds to wait for an autoscaler to add what members need."
    ),
    mlflow: str | None = typer.Option(
        None,
        "--mlflow",
        help="MLflow tracking server URI (overrides tracking.mlflow_uri): a parent run for this "
        "command, a child run per member or trial.",
    ),
) -> None:
    """Train every ensemble member at the same time (one Ray Train run each); rerun to resume."""
    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.train.launcher import train_experiment
    from organseg.viz.progress import LiveProgress

    cfg = _load(config, output, overrides, mlflow)
    report = train_experiment(
        cfg,
        members=member or None,
        address=address,
        restart=restart,
        console=err_console,
        autoscaling=autoscaling,
        resource_wait_s=resource_wait,
        progress=LiveProgress(err_console),
    )
    table = Table(title=f"{cfg.name}: members")
    for column in ("member", "outcome", "best val Dice", "best epoch", "note"):
        table.add_column(column)
    for o in report.outcomes:
        colour = "green" if o.ok else "red"
        table.add_row(
            o.name,
            f"[{colour}]{o.status}[/]",
            f"{o.best_val_dice:.4f}" if o.best_val_dice is not None else "-",
            str(o.best_epoch + 1) if o.best_epoch is not None else "-",
            o.error or "",
        )
    console.print(table)
    if report.model_dir:
        console.print(f"model directory: {report.model_dir}")
    if report.curves_png:
        console.print(f"learning curves: {report.curves_png}")
    if report.modality_classifier is not None:
        console.print(
            f"{report.modality_classifier.summary()}; routes volumes whose headers do not say "
            "their modality, when validated",
            highlight=False,
            soft_wrap=True,
        )
    if not report.ok:
        from organseg.errors import RunError

        failed = [o.name for o in report.outcomes if not o.ok]
        raise RunError(f"{cfg.name}: training failed for member(s) {failed}; see the table above")


def tune_command(
    config: Path = typer.Argument(..., help="Experiment YAML with a `tune:` section."),
    member: list[str] | None = typer.Option(
        None, "--member", "-m", help="Tune only this member (repeatable)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted study."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the best config YAML."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS or local)."
    ),
    overrides: list[str] | None = typer.Option(
        None,
        "--set",
        help="Override a config key (value parsed as YAML), e.g. --set dataset.path=/mnt/data.",
    ),
    mlflow: str | None = typer.Option(
        None,
        "--mlflow",
        help="MLflow tracking server URI (overrides tracking.mlflow_uri): a parent run for this "
        "command, a child run per member or trial.",
    ),
) -> None:
    """Search learning rate and loss weighting with Ray Tune (Optuna TPE + ASHA); write the best config."""
    from organseg.cli._console import console, err_console
    from organseg.train.tune import tune_experiment

    cfg = _load(config, None, overrides, mlflow)
    report = tune_experiment(
        cfg,
        members=member or None,
        resume=resume,
        output=output,
        address=address,
        console=err_console,
        given=_given_paths(config, overrides),
    )
    for name, best in report.best.items():
        console.print(f"{name}: best val Dice {best['val_dice']:.4f} with {best['params']}")
    console.print(f"best config: {report.best_config}")
    console.print(f"all trials:  {report.trials_csv}")
    if report.plot:
        console.print(f"plot:        {report.plot}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("tune")(tune_command)
