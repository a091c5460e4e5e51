"""``organseg tune``: Ray Tune over the member training driver, with Optuna (TPE) and ASHA.

Train V2 has no ``Tuner(trainer)``: each Tune trial is a small driver function that builds the member's
``TorchTrainer`` with the sampled learning rate and loss weighting and runs it; Ray Train's
``TuneReportCallback`` forwards every epoch's validation Dice to Tune, so ASHA can stop weak trials early.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

from organseg.config import ExperimentConfig, MemberConfig, RangeConfig, dump_config
from organseg.errors import ConfigError, RunError
from organseg.runtime import ray_session
from organseg.train import storage
from organseg.train.data import prepare_data
from organseg.train.launcher import (
    describe_failure,
    make_trainer,
    member_payload,
    plan_member,
    start_tracking,
)
from organseg.train.payload import TrainPayload
from organseg.train.tracking import RunTracking, TrackingPlan
from organseg.uri import is_uri

METRIC = "val_dice"


@dataclass
class TuneReport:
    best: dict[str, dict[str, Any]]  # member -> {"val_dice", "params"}
    best_config: Path
    trials_csv: Path
    plot: Path | None


def apply_params(
    member: MemberConfig, params: dict[str, float], epochs: int | None = None
) -> MemberConfig:
    """The member with sampled hyper-parameters applied (what a trial trains, and what the best config keeps)."""
    data = member.model_dump(mode="json")
    if "lr" in params:
        data["optimizer"]["lr"] = float(params["lr"])
    if "dice_weight" in params:
        if member.resolved_loss() != "dice_bce":  # a Dice share only means something there
            raise ConfigError(
                f"member {member.name!r} trains with {member.resolved_loss()!r}; dice_weight only "
                "applies to loss: dice_bce"
            )
        data["dice_weight"] = float(params["dice_weight"])
    if "adversarial_lam" in params:
        data["adversarial"]["lam"] = float(params["adversarial_lam"])
    if epochs is not None:
        data["epochs"] = epochs
    return MemberConfig.model_validate(data)


def _domain(r: RangeConfig) -> Any:
    return tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)


def search_space(config: ExperimentConfig, member: MemberConfig) -> dict[str, Any]:
    """The Ray Tune search space of ``member``: learning rate, and the Dice weight or the
    adversarial λ where the config searches them.
    """
    spec = config.tune
    assert spec is not None
    space = {"lr": _domain(spec.lr)}
    if member.adversarial.enabled:
        if spec.adversarial_lam is not None:
            space["adversarial_lam"] = _domain(spec.adversarial_lam)
    elif spec.dice_weight is not None and member.resolved_loss() == "dice_bce":
        # Only the weighted loss has a Dice share to tune; a member's loss kind is never changed.
        space["dice_weight"] = _domain(spec.dice_weight)
    return space


def untuned_note(config: ExperimentConfig, member: MemberConfig) -> str | None:
    """Why ``dice_weight`` is not searched for ``member`` although the config asks for it, or None."""
    spec = config.tune
    if spec is None or spec.dice_weight is None or member.adversarial.enabled:
        return None
    if member.resolved_loss() != "dice_bce":
        return (
            f"{member.name} trains with loss {member.resolved_loss()!r}, which has no Dice/BCE "
            "share: tuning the learning rate only (set loss: dice_bce to tune the weighting)"
        )
    return None


def _trial(params: dict[str, Any], *, base: dict[str, Any]) -> None:
    """One Tune trial: train the member with the sampled parameters as its own Ray Train run."""
    member = apply_params(MemberConfig.model_validate(base["member"]), params, base["epochs"])
    shared: TrainPayload = base[
        "payload"
    ]  # its own copy of ``extra``: the trial's tracking goes there
    payload = shared.model_copy(update={"member": member, "extra": dict(shared.extra)})
    trial_id = tune.get_context().get_trial_id()
    run_name = f"{member.name}-{trial_id}"
    if base.get("tracking"):  # the trial's child run of the tuning run, and its event files
        tracking = RunTracking.of(base["tracking"])
        hyper = {"member": member.name, "epochs": base["epochs"], **params}
        tags = {"organseg.member": member.name, "organseg.trial_id": trial_id}
        plan = tracking.child(run_name, storage.join(base["run_root"], run_name), hyper, tags)
    else:
        plan = TrackingPlan(storage.join(base["run_root"], run_name), base.get("tensorboard", True))
    plan.attach(payload.extra)
    trainer = make_trainer(member, payload, base["run_root"], run_name, [TuneReportCallback()])
    try:
        trainer.fit()
    except Exception as exc:
        raise RuntimeError(f"trial {trial_id} failed: {describe_failure(exc)}") from None


def tune_experiment(
    config: ExperimentConfig,
    *,
    members: list[str] | None = None,
    resume: bool = False,
    output: Path | None = None,
    address: str | None = None,
    console: Console | None = None,
    given: GivenPaths | None = None,
) -> TuneReport:
    """Run one study per member, then write the best config, a CSV of all trials and a plot.

    ``given`` holds the config's paths as the user wrote them, so the best config keeps them (a
    relative ``storage_path`` stays relative) instead of this machine's absolute paths.
    """
    console = console or Console(stderr=True)
    if config.tune is None:
        raise ConfigError("the config has no `tune:` section (search space, samples, concurrency)")
    spec = config.tune
    names = members or spec.members or [m.name for m in config.members]
    data = prepare_data(config)
    tune_root = storage.join(config.storage_root(), "tune")
    run_root = storage.join(tune_root, "runs")
    frames, best = [], {}
    tuned = config.model_copy(deep=True)
    tracking = start_tracking(config, data, run_root, console, "tune")
    with ray_session(address), tracking.failed_on_error():
        for name in names:
            member = config.member(name)
            epochs = spec.epochs or member.epochs
            base = {
                "member": member.model_dump(mode="json"),
                "payload": member_payload(
                    config, plan_member(config, member, data), data, run_root
                ),
                "run_root": run_root,
                "epochs": epochs,
                "tracking": tracking.to_dict(),
                "tensorboard": config.tracking.tensorboard,
            }
            # The trial only drives its TorchTrainer (which asks for its own workers): a token CPU share.
            trainable = tune.with_resources(tune.with_parameters(_trial, base=base), {"cpu": 0.01})
            study_path = storage.join(tune_root, name)
            if resume and tune.Tuner.can_restore(study_path):
                console.print(f"[bold]{name}[/]: resuming the study in {study_path}")
                tuner = tune.Tuner.restore(study_path, trainable, resume_errored=True)
            else:
                if resume:
                    console.print(
                        f"[yellow]{name}: no study to resume in {study_path}; starting one[/]"
                    )
                console.print(
                    f"[bold]{name}[/]: {spec.num_samples} trials, {spec.max_concurrent_trials} at a time, "
                    f"up to {epochs} epochs each (Optuna TPE + ASHA on {METRIC})"
                )
                note = untuned_note(config, member)
                if note:
                    console.print(f"  {note}", highlight=False, soft_wrap=True)
                tuner = tune.Tuner(
                    trainable,
                    param_space=search_space(config, member),
                    tune_config=tune.TuneConfig(
                        metric=METRIC,
                        mode="max",
                        search_alg=OptunaSearch(metric=METRIC, mode="max", seed=spec.seed),
                        scheduler=ASHAScheduler(
                            time_attr="training_iteration",
                            max_t=epochs,
                            grace_period=min(spec.grace_period, epochs),
                            reduction_factor=spec.reduction_factor,
                        ),
                        num_samples=spec.num_samples,
                        max_concurrent_trials=spec.max_concurrent_trials,
                    ),
                    run_config=tune.RunConfig(name=name, storage_path=tune_root, verbose=0),
                )
            results = tuner.fit()
            for result in results:
                trial_id = (result.metrics or {}).get("trial_id")
                if trial_id:
                    final = {
                        f"final_{k}": float(v)
                        for k, v in (result.metrics or {}).items()
                        if k in (METRIC, "best_val_dice", "epoch")
                    }
                    run_dir = storage.join(run_root, f"{name}-{trial_id}")
                    tracking.log_final(run_dir, final, result.error is None)
            frame = results.get_dataframe(filter_metric=METRIC, filter_mode="max")
            frame.insert(0, "member", name)
            frames.append(frame)
            try:
                winner = results.get_best_result(metric=METRIC, mode="max", scope="all")
            except RuntimeError:
                winner = None
            if winner is None or winner.metrics is None or METRIC not in winner.metrics:
                errors = [describe_failure(r.error) for r in results if r.error]
                raise RunError(
                    f"tuning member {name!r}: every trial failed ({'; '.join(errors[:3]) or 'no results'})"
                )
            params = {
                k: v
                for k, v in winner.config.items()
                if k in ("lr", "dice_weight", "adversarial_lam")
            }
            best[name] = {"val_dice": float(winner.metrics[METRIC]), "params": params}
            tuned.members = [
                apply_params(m, params) if m.name == name else m for m in tuned.members
            ]
    tuned.name = f"{config.name}-tuned"
    tuned.tune = None
    local_root = Path(config.storage_root()) if not is_uri(tune_root) else Path.cwd()
    best_config = output or local_root / "tune" / "best.yaml"
    best_config.parent.mkdir(parents=True, exist_ok=True)
    header = "# Best hyper-parameters found by `organseg tune`: " + ", ".join(
        f"{n} val_dice={b['val_dice']:.4f} {b['params']}" for n, b in best.items()
    )
    best_config.write_text(header + "\n" + best_config_text(tuned, given, best_config))
    trials = pd.concat(frames, ignore_index=True)
    trials_csv = best_config.parent / "trials.csv"
    trials.to_csv(trials_csv, index=False)
    plot = plot_trials(trials, best_config.parent / "trials.png")
    tags = {f"best.{n}.val_dice": f"{b['val_dice']:.6f}" for n, b in best.items()}
    tracking.finish(True, [p for p in (best_config, trials_csv, plot) if p is not None], tags)
    return TuneReport(best, best_config, trials_csv, plot)


@dataclass(frozen=True)
class GivenPaths:
    """The config's paths as written: outputs relative to the working directory, ``dataset_path``
    relative to ``config_dir`` (the folder of the config file)."""

    config_dir: Path
    storage_path: str | None = None
    output: str | None = None
    cache_dir: str | None = None
    dataset_path: str | None = None

    @classmethod
    def of(cls, data: dict[str, Any], config_dir: Path) -> GivenPaths:
        """From a config mapping as read from YAML (before paths are made absolute)."""
        dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
        text = lambda v: None if v is None else str(v)  # noqa: E731
        return cls(
            config_dir=Path(config_dir).resolve(),
            storage_path=text(data.get("storage_path")),
            output=text(data.get("output")),
            cache_dir=text(dataset.get("cache_dir")),
            dataset_path=text(dataset.get("path")),
        )


def best_config_text(tuned: ExperimentConfig, given: GivenPaths | None, where: Path) -> str:
    """The tuned config as YAML, with paths as the user gave them: outputs unchanged (they are
    relative to the working directory), the dataset path re-expressed relative to ``where``'s folder
    so the file still finds the data; without ``given``, as resolved."""
    import os

    import yaml

    if given is None:
        return dump_config(tuned)
    data = tuned.model_dump(mode="json", exclude_none=True)
    for key, value in (("storage_path", given.storage_path), ("output", given.output)):
        if value is not None:
            data[key] = value
        elif key == "output":
            data.pop(key, None)
    dataset = data.get("dataset", {})
    if given.cache_dir is not None:
        dataset["cache_dir"] = given.cache_dir
    else:
        dataset.pop("cache_dir", None)
    if given.dataset_path is not None and not Path(given.dataset_path).is_absolute():
        absolute = (given.config_dir / given.dataset_path).resolve()
        dataset["path"] = os.path.relpath(absolute, Path(where).resolve().parent)
    return yaml.safe_dump(data, sort_keys=False)


def _log_axis(axis, low: float, high: float) -> None:
    """A log axis with a handful of short labels (``2e-04``): every decade over wide ranges, 1-2-5
    over a few decades, 1-2-3-5-7 within one; minor ticks unlabelled. Matplotlib's default labels every
    minor tick of a narrow range in ``2×10^-4`` form, and those labels run into each other."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(high, low * 1.0001) / low) if low > 0 else 3.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0e}"))
    axis.set_minor_formatter(NullFormatter())


def plot_trials(trials: pd.DataFrame, path: Path) -> Path | None:
    """Per member: trial value in completion order (with the running best) and lr × weight coloured by Dice."""
    import matplotlib.pyplot as plt

    fig = trials_figure(trials)
    if fig is None:
        return None
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trials_figure(trials: pd.DataFrame):
    """The figure :func:`plot_trials` saves (None without trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if trials.empty or METRIC not in trials:
        return None
    members = list(dict.fromkeys(trials["member"]))
    fig, axes = plt.subplots(
        len(members), 2, figsize=(11, 4 * len(members)), squeeze=False, constrained_layout=True
    )
    for row, name in zip(axes, members, strict=True):
        frame = trials[trials["member"] == name].sort_values(
            "timestamp" if "timestamp" in trials else METRIC
        )
        values = frame[METRIC].to_numpy()
        row[0].plot(range(1, len(values) + 1), values, "o", label="trial")
        row[0].plot(range(1, len(values) + 1), pd.Series(values).cummax(), "-", label="best so far")
        row[0].set(title=f"{name}: trial value", xlabel="trial (completion order)", ylabel=METRIC)
        row[0].legend()
        weight = next(
            (
                c
                for c in ("config/dice_weight", "config/adversarial_lam")
                if c in frame and frame[c].notna().any()
            ),
            None,
        )
        if "config/lr" in frame and weight:
            points = row[1].scatter(
                frame["config/lr"], frame[weight], c=values, cmap="viridis", vmin=0, vmax=1
            )
            row[1].set(
                title=f"{name}: lr × {weight.split('/')[1]}",
                xlabel="learning rate",
                ylabel=weight.split("/")[1],
            )
            fig.colorbar(points, ax=row[1], label=METRIC)
        elif "config/lr" in frame:  # only the learning rate was searched
            row[1].plot(frame["config/lr"], values, "o")
            row[1].set(title=f"{name}: {METRIC} by lr", xlabel="learning rate", ylabel=METRIC)
        if "config/lr" in frame:
            row[1].set_xscale("log")
            _log_axis(
                row[1].xaxis, float(frame["config/lr"].min()), float(frame["config/lr"].max())
            )
        for ax in row:
            ax.grid(alpha=0.3)
    return fig
