"""Ray Tune + Optuna (TPE) + ASHA over the member driver, on the session's local Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from organseg.config import load_config
from organseg.train.launcher import train_experiment
from organseg.train.tune import tune_experiment
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_trial_search_writes_a_trainable_best_config(ray_cluster: str, tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path, "tuning")
    report = tune_experiment(config, members=["attn"])
    best = report.best["attn"]
    assert 0.0 <= best["val_dice"] <= 1.0
    assert set(best["params"]) == {"lr", "dice_weight"}
    assert 1e-5 <= best["params"]["lr"] <= 1e-3

    trials = pd.read_csv(report.trials_csv)
    assert len(trials) == 2
    assert {"config/lr", "config/dice_weight", "val_dice", "member"} <= set(trials.columns)
    assert report.plot is not None
    assert report.plot.stat().st_size > 0

    tuned = load_config(report.best_config)  # the same loader `organseg train` uses
    member = tuned.member("attn")
    assert member.optimizer.lr == pytest.approx(best["params"]["lr"])
    assert member.dice_weight == pytest.approx(best["params"]["dice_weight"])
    assert member.resolved_loss() == "dice_bce"
    assert tuned.member("dualtail").resolved_loss() == "dice"  # untuned members keep their loss
    assert tuned.tune is None

    # ...and it really trains: one epoch of the tuned member
    tuned.members = [member.model_copy(update={"epochs": 1})]
    (outcome,) = train_experiment(tuned).outcomes
    assert outcome.status == "trained"


def test_resume_without_a_study_starts_one(ray_cluster: str, tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path, "tune-resume")
    config.tune.num_samples = 1
    report = tune_experiment(config, members=["attn"], resume=True)
    assert "attn" in report.best
    again = tune_experiment(config, members=["attn"], resume=True)  # restores the finished study
    assert again.best["attn"]["val_dice"] == pytest.approx(report.best["attn"]["val_dice"])
