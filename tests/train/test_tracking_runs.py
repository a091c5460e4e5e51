"""``organseg train`` and ``organseg tune`` against a real MLflow server, on the session's Ray cluster:
one parent run, a child run per member (also one that crashed and restarted) or per trial, whose
metrics, params and artifacts are what training reported; TensorBoard event files beside each run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from organseg.ensemble.spec import MEMBER_FILE, SPEC_FILE
from organseg.ensemble.version import model_version
from organseg.train.launcher import train_experiment
from organseg.train.tracking import TENSORBOARD_DIR, tensorboard_tag
from organseg.train.tune import tune_experiment
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOSS_TERMS = {"attn": ["train_loss_dice", "train_loss_bce"], "dualtail": ["train_loss_dice"]}


def _runs(client, experiment: str) -> tuple[object, dict[str, object]]:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = {r.data.tags["mlflow.runName"]: r for r in runs if r not in parents}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    return parents[0], children


def test_train_logs_members_to_tensorboard_and_mlflow(
    ray_cluster: str, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    base = tiny_experiment(tmp_path, "tracked")
    members = [m.model_dump(mode="json") for m in base.members]
    members[0].update(max_failures=1, fault={"crash_once_at_epoch": 2})  # dies hard once
    config = tiny_experiment(
        tmp_path, "tracked", members=members,
        tracking={"mlflow_uri": mlflow_server, "experiment": "tracked-exp"},
    )  # fmt: skip
    console = Console(record=True, width=400)
    report = train_experiment(config, console=console)
    assert report.ok, [o.error for o in report.outcomes]
    assert (Path(config.storage_root()) / "train" / ".faults" / "dualtail.crashed").is_file()
    shown = console.export_text()
    assert f"tensorboard --logdir {Path(config.storage_root()) / 'train'}" in shown
    version = model_version(report.model_dir).id

    client = MlflowClient(mlflow_server)
    parent, children = _runs(client, "tracked-exp")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["organseg.model"] == "tracked"
    assert parent.data.tags["organseg.model_version"] == version
    assert len(parent.data.tags["organseg.dataset_fingerprint"]) == 16
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        SPEC_FILE,
        report.curves_png.name,
    }
    assert sorted(children) == ["attn", "dualtail"]  # the restarted member: still one run
    for outcome in report.outcomes:
        child = children[outcome.name]
        assert child.info.status == "FINISHED"
        assert child.data.tags["organseg.model_version"] == version
        assert child.data.params["epochs"] == "3"
        assert child.data.params["optimizer.lr"] == "0.002"
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == [MEMBER_FILE]
        steps = [h["epoch"] for h in outcome.history]
        assert steps == [0, 1, 2]
        # the loss terms each member optimised (attn: Dice + BCE; dualtail: Dice alone), each epoch
        # adding up to the total
        terms = LOSS_TERMS[outcome.name]
        assert sorted(k for k in outcome.history[0] if k.startswith("train_loss_")) == sorted(terms)
        for h in outcome.history:
            assert sum(h[k] for k in terms) == pytest.approx(h["train_loss"], rel=1e-6)
        for key in ("val_dice", "train_loss", *terms, "lr", "data_wait_fraction", "val_dice_liver"):
            logged = sorted(
                (m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)
            )
            assert [s for s, _ in logged] == steps, key
            assert [v for _, v in logged] == pytest.approx([h[key] for h in outcome.history]), key

        events = EventAccumulator(
            str(Path(config.storage_root()) / "train" / outcome.name / TENSORBOARD_DIR),
            size_guidance={"scalars": 0},
        )
        events.Reload()
        for key in ("val_dice", "train_loss", *terms, "lr", "train_slices_per_s"):
            series = events.Scalars(tensorboard_tag(key))
            assert [e.step for e in series] == steps, key
            assert [e.value for e in series] == pytest.approx([h[key] for h in outcome.history]), (
                key
            )
    # the crashed member resumed past its checkpoint and its curves continued in the same run
    dualtail = next(o for o in report.outcomes if o.name == "dualtail")
    assert dualtail.history[-1]["start_epoch"] == 2


def test_tune_logs_each_trial_as_a_child_run(
    ray_cluster: str, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    config = tiny_experiment(
        tmp_path, "tuned", tracking={"mlflow_uri": mlflow_server, "experiment": "tuned-exp"}
    )
    report = tune_experiment(config, members=["attn"])
    client = MlflowClient(mlflow_server)
    parent, children = _runs(client, "tuned-exp")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["organseg.command"] == "tune"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "best.yaml",
        "trials.csv",
    }
    assert len(children) == 2
    trials = pd.read_csv(report.trials_csv)
    for row in trials.to_dict("records"):
        child = children[f"attn-{row['trial_id']}"]
        assert child.info.status == "FINISHED"
        assert float(child.data.params["lr"]) == pytest.approx(row["config/lr"])
        assert float(child.data.params["dice_weight"]) == pytest.approx(row["config/dice_weight"])
        assert child.data.metrics["final_val_dice"] == pytest.approx(row["val_dice"])
        run_dir = Path(config.storage_root()) / "tune" / "runs" / f"attn-{row['trial_id']}"
        assert list((run_dir / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    best = report.best["attn"]["val_dice"]
    assert max(r.data.metrics["final_val_dice"] for r in children.values()) == pytest.approx(best)


def test_a_silent_tracker_costs_one_warning_and_training_goes_on(
    ray_cluster: str, tmp_path: Path, hanging_tracker: str
) -> None:
    base = tiny_experiment(tmp_path, "silent")
    members = [m.model_dump(mode="json") for m in base.members][:1]
    members[0].update(epochs=2)
    config = tiny_experiment(
        tmp_path, "silent", members=members, tracking={"mlflow_uri": hanging_tracker}
    )
    console = Console(record=True, width=400)
    report = train_experiment(config, console=console)
    assert report.ok, [o.error for o in report.outcomes]
    shown = console.export_text()
    assert f"MLflow tracking at {hanging_tracker} failed" in shown
    assert "training goes on without MLflow" in shown
    (outcome,) = report.outcomes
    assert [h["epoch"] for h in outcome.history] == [0, 1]
    folder = Path(config.storage_root()) / "train" / outcome.name / TENSORBOARD_DIR
    assert list(folder.glob("events.out.tfevents.*"))  # TensorBoard regardless
