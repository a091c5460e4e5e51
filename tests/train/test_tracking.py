"""TensorBoard event files and MLflow runs of the trainer core, without Ray: what rank 0 writes each
epoch reads back with TensorBoard's own reader and from a real MLflow server; a restart neither
duplicates nor loses epochs; a tracker that refuses or never answers costs one bounded wait and a
warning naming it, and training goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from organseg.train.core import MEMBER_FILE, MemberTrainer, TrainPayload, load_state
from organseg.train.data import prepare_data
from organseg.train.launcher import member_payload, plan_member
from organseg.train.tracking import (
    CALL_TIMEOUT_S,
    MLFLOW_RUN_FILE,
    TENSORBOARD_DIR,
    EpochLog,
    RunTracking,
    TrackingPlan,
    curve_metrics,
    flatten,
    shown_uri,
    tensorboard_tag,
)
from tests.conftest import tiny_experiment


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> TrainPayload:
    config = tiny_experiment(tmp_path_factory.mktemp("tracking"), "tracking")
    member = config.members[0].model_copy(update={"epochs": 3, "steps_per_epoch": 2})
    data = prepare_data(config)
    return member_payload(config, plan_member(config, member, data), data)


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``folder``'s event files, as TensorBoard shows them."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def train_with_restart(payload: TrainPayload, plan: TrackingPlan, checkpoints: Path) -> list[dict]:
    """Epochs 0 and 1, then a crash before epoch 1's checkpoint, a restart from epoch 0's, and epochs
    1 and 2 again: the history the finished run's checkpoint holds."""
    first = MemberTrainer(payload)
    log = EpochLog(plan, first.history)
    result = first.run_epoch(0)
    first.write_checkpoint(checkpoints, result)
    log.log_epoch(0, result.metrics)
    log.log_epoch(1, first.run_epoch(1).metrics)  # logged, never checkpointed: the worker "dies"
    log.close()

    restarted = MemberTrainer(payload, state=load_state(checkpoints))
    assert restarted.start_epoch == 1
    log = EpochLog(plan, restarted.history)
    for epoch in restarted.epochs():
        log.log_epoch(epoch, restarted.run_epoch(epoch).metrics)
    log.close()
    return restarted.history


def test_metric_names_and_groups() -> None:
    metrics = {"epoch": 2, "val_dice": 0.5, "val_dice_liver": 0.5, "train_loss": 0.3, "lr": 1e-3,
               "precision": "fp32", "data_wait_fraction": 0.1, "finished_at": 1.0}  # fmt: skip
    assert curve_metrics(metrics) == {
        "val_dice": 0.5, "val_dice_liver": 0.5, "train_loss": 0.3, "lr": 1e-3,
        "data_wait_fraction": 0.1,
    }  # fmt: skip
    assert tensorboard_tag("val_dice_liver") == "dice/val_dice_liver"
    assert tensorboard_tag("train_loss") == "loss/train_loss"
    assert tensorboard_tag("train_loss_discriminator") == "loss/train_loss_discriminator"
    assert tensorboard_tag("train_loss_dice") == "loss/train_loss_dice"  # a loss, not a Dice score
    assert tensorboard_tag("lr") == "optim/lr"
    assert tensorboard_tag("train_slices_per_s") == "throughput/train_slices_per_s"
    assert flatten({"optimizer": {"lr": 0.1}, "modalities": ["CT"], "volume": None}) == {
        "optimizer.lr": "0.1",
        "modalities": '["CT"]',
        "volume": "null",
    }
    assert shown_uri("http://me:secret@mlflow:5000/x") == "http://me:***@mlflow:5000/x"


def test_tensorboard_curves_equal_the_checkpoint_history_across_a_restart(
    payload: TrainPayload, tmp_path: Path
) -> None:
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    plan = TrackingPlan(run_dir=str(tmp_path / "run"))
    history = train_with_restart(payload, plan, checkpoints)

    folder = tmp_path / "run" / TENSORBOARD_DIR
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one per (re)start
    scalars = read_scalars(folder)
    organ = payload.organs[0]
    for key in ("val_dice", f"val_dice_{organ}", "train_loss", "train_loss_dice", "val_loss", "lr",
                "data_wait_fraction", "train_slices_per_s"):  # fmt: skip
        series = scalars[tensorboard_tag(key)]
        # the epoch logged before the crash was purged: one point per epoch, the restarted run's
        assert [step for step, _ in series] == [0, 1, 2], key
        assert [value for _, value in series] == pytest.approx([h[key] for h in history]), key


@pytest.mark.parametrize("tracker", ["refusing_tracker", "hanging_tracker"])
def test_a_tracker_that_is_down_or_silent_never_stops_training(
    payload: TrainPayload, tmp_path: Path, tracker: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("mlflow")
    uri = request.getfixturevalue(tracker)
    warnings: list[str] = []
    started = time.monotonic()
    tracking = RunTracking.start(
        runs_root=str(tmp_path / "runs"), tensorboard=True, mlflow_uri=uri,
        experiment="down", run_name="down", tags={}, warn=warnings.append,
    )  # fmt: skip
    assert time.monotonic() - started < CALL_TIMEOUT_S + 5
    assert not tracking.on
    assert len(warnings) == 1
    assert uri in warnings[0]
    assert "training goes on" in warnings[0]
    plan = tracking.child("m", str(tmp_path / "runs" / "m"), {"lr": 0.1})
    assert plan.mlflow_run_id is None  # no MLflow for the member; its event files all the same

    # a server that goes away mid-run: the worker's first call warns, the rest cost nothing
    plan = TrackingPlan(str(tmp_path / "runs" / "m"), mlflow_uri=uri, mlflow_run_id="0" * 32)
    trainer = MemberTrainer(payload)
    log = EpochLog(plan, [], warn=warnings.append)
    started = time.monotonic()
    for epoch in trainer.epochs():
        log.log_epoch(epoch, trainer.run_epoch(epoch).metrics)
    log.close()
    assert [h["epoch"] for h in trainer.history] == [0, 1, 2]
    assert len(warnings) == 2
    assert uri in warnings[1]
    assert time.monotonic() - started < CALL_TIMEOUT_S + 60  # one bounded wait, then training alone
    assert [
        s for s, _ in read_scalars(tmp_path / "runs" / "m" / TENSORBOARD_DIR)["dice/val_dice"]
    ] == [0, 1, 2]


@pytest.mark.slow
def test_mlflow_runs_hold_what_training_reported(
    payload: TrainPayload, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    runs_root = str(tmp_path / "runs")
    tags = {"organseg.dataset_fingerprint": "abc123", "organseg.version": "0.1.0"}

    def start() -> RunTracking:
        return RunTracking.start(
            runs_root=runs_root, tensorboard=True, mlflow_uri=mlflow_server,
            experiment="core-tracking", run_name="core", tags=tags,
        )  # fmt: skip

    tracking = start()
    assert tracking.on
    member = payload.member.model_dump(mode="json")
    run_dir = str(tmp_path / "runs" / "dualtail")
    plan = tracking.child("dualtail", run_dir, member, {"organseg.member": "dualtail"})
    assert plan.mlflow_run_id is not None
    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    history = train_with_restart(payload, plan, checkpoints)
    tracking.finish_child("dualtail", True, [checkpoints / MEMBER_FILE])
    tracking.finish(True)

    # a rerun of the command finds the same runs: no duplicates
    again = start()
    assert again.parent_id == tracking.parent_id
    assert again.child("dualtail", run_dir, member).mlflow_run_id == plan.mlflow_run_id
    assert json.loads((Path(run_dir) / MLFLOW_RUN_FILE).read_text())["run_id"] == plan.mlflow_run_id

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("core-tracking")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    child = client.get_run(plan.mlflow_run_id)
    assert child.data.tags["mlflow.parentRunId"] == tracking.parent_id
    assert child.data.tags["organseg.dataset_fingerprint"] == "abc123"
    assert child.data.tags["mlflow.runName"] == "dualtail"
    assert child.data.params["optimizer.lr"] == str(payload.member.optimizer.lr)
    assert child.data.params["arch"] == payload.member.arch
    for key in ("val_dice", "train_loss", "train_loss_dice", "lr", "data_wait_fraction",
                "train_slices_per_s"):  # fmt: skip
        logged = sorted(
            (m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)
        )
        assert [s for s, _ in logged] == [0, 1, 2], key  # epoch 1 once, though logged twice
        # epoch 1 as the crashed worker logged it (MLflow keeps the first); 0 and 2 as checkpointed
        assert logged[0][1] == pytest.approx(history[0][key]), key
        assert logged[2][1] == pytest.approx(history[2][key]), key
    assert [a.path for a in client.list_artifacts(child.info.run_id)] == [MEMBER_FILE]
    downloaded = client.download_artifacts(child.info.run_id, MEMBER_FILE, str(tmp_path / "dl"))
    assert json.loads(Path(downloaded).read_text())["epoch"] == 0


def test_mlflow_asked_without_its_client_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from organseg.cli import main
    from organseg.config import dump_config
    from organseg.errors import ConfigError
    from organseg.train.tracking import require_mlflow

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(ConfigError, match="pip install mlflow-skinny"):
        require_mlflow("http://mlflow.invalid:5000")

    config_file = tmp_path / "c.yaml"
    config_file.write_text(dump_config(tiny_experiment(tmp_path, "noclient")))
    with pytest.raises(SystemExit) as exited:
        main(["train", str(config_file), "--mlflow", "http://u:pw@x:1"])
    assert exited.value.code == 2
    said = capsys.readouterr().err
    assert "pip install mlflow-skinny (organseg's tracking extra)" in said
    assert ":pw@" not in said  # no password in the message
    assert not (tmp_path / "runs").exists()  # nothing trained
