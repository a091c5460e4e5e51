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
from organseg.train.core import TrainPayload
from organseg.train.data import prepare_data
from organseg.train.launcher import _payload, describe_failure, make_trainer

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
        data["dice_weight"] = float(params["dice_weight"])
        if (data.get("loss") or member.resolved_loss()) != "dice_bce":
            data["loss"] = "dice_bce"  # a Dice share only means something in the weighted loss
    if "adversarial_lam" in params:
        data["adversarial"]["lam"] = float(params["adversarial_lam"])
    if epochs is not None:
        data["epochs"] = epochs
    return MemberConfig.model_validate(data)


def _domain(r: RangeConfig) -> Any:
    return tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)


def search_space(config: ExperimentConfig, member: MemberConfig) -> dict[str, Any]:
    spec = config.tune
    assert spec is not None
    space = {"lr": _domain(spec.lr)}
    if member.adversarial.enabled:
        if spec.adversarial_lam is not None:
            space["adversarial_lam"] = _domain(spec.adversarial_lam)
    elif spec.dice_weight is not None:
        space["dice_weight"] = _domain(spec.dice_weight)
    return space


def _trial(params: dict[str, Any], *, base: dict[str, Any]) -> None:
    """One Tune trial: train the member with the sampled parameters as its own Ray Train run."""
    member = apply_params(MemberConfig.model_validate(base["member"]), params, base["epochs"])
    payload = TrainPayload(**{**base["payload"], "member": member.model_dump(mode="json")})
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(
        member, payload, base["run_root"], f"{member.name}-{trial_id}", [TuneReportCallback()]
    )
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
) -> TuneReport:
    """Run one study per member, then write the best config, a CSV of all trials and a plot."""
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
    with ray_session(address):
        for name in names:
            member = config.member(name)
            epochs = spec.epochs or member.epochs
            base = {
                "member": member.model_dump(mode="json"),
                "payload": _payload(config, member, data, run_root).to_dict(),
                "run_root": run_root,
                "epochs": epochs,
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
    local_root = Path(config.storage_root()) if "://" not in tune_root else Path.cwd()
    best_config = output or local_root / "tune" / "best.yaml"
    best_config.parent.mkdir(parents=True, exist_ok=True)
    header = "# Best hyper-parameters found by `organseg tune`: " + ", ".join(
        f"{n} val_dice={b['val_dice']:.4f} {b['params']}" for n, b in best.items()
    )
    best_config.write_text(header + "\n" + dump_config(tuned))
    trials = pd.concat(frames, ignore_index=True)
    trials_csv = best_config.parent / "trials.csv"
    trials.to_csv(trials_csv, index=False)
    return TuneReport(
        best, best_config, trials_csv, plot_trials(trials, best_config.parent / "trials.png")
    )


def plot_trials(trials: pd.DataFrame, path: Path) -> Path | None:
    """Per member: trial value in completion order (with the running best) and lr × weight coloured by Dice."""
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
            (c for c in ("config/dice_weight", "config/adversarial_lam") if c in frame), None
        )
        if "config/lr" in frame and weight:
            points = row[1].scatter(
                frame["config/lr"], frame[weight], c=values, cmap="viridis", vmin=0, vmax=1
            )
            row[1].set_xscale("log")
            row[1].set(
                title=f"{name}: lr × {weight.split('/')[1]}",
                xlabel="learning rate",
                ylabel=weight.split("/")[1],
            )
            fig.colorbar(points, ax=row[1], label=METRIC)
        for ax in row:
            ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
