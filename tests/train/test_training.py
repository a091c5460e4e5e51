"""Members train concurrently on a real local Ray cluster; resume, fault tolerance and isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from organseg.config import dump_config
from organseg.ensemble.spec import load_spec
from organseg.train.launcher import train_experiment
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_members_train_concurrently_and_export_a_model_dir(trained_ensemble) -> None:
    _config, report = trained_ensemble
    assert [o.status for o in report.outcomes] == ["trained", "trained"]
    spec = load_spec(report.model_dir)
    assert [m.name for m in spec.members] == ["dualtail", "attn"]
    for member in spec.members:
        assert (report.model_dir / member.weights).is_file()
        described = json.loads((report.model_dir / member.name / "member.json").read_text())
        assert described["organs"] == ["liver"]
        assert described["preprocess"]["size"] == 64
        assert len(described["history"]) == described["member"]["epochs"]
    assert {m.value for m in spec.modalities()} == {"CT", "MR-T2SPIR"}
    assert report.curves_png is not None
    assert report.curves_png.stat().st_size > 0
    # the modality classifier: validated by patient-grouped cross-validation over all the cache's
    # series (4 CT + 4 MR patients: every series held out once, by a classifier that never saw its
    # patient), fitted on all of them, listed in ensemble.yaml with how it was validated
    classifier = report.modality_classifier
    assert classifier is not None
    assert classifier.held_out is not None
    assert spec.modality_classifier is not None
    assert (report.model_dir / spec.modality_classifier.file).is_file()
    four = {"CT": 4, "MR-T1-in": 4, "MR-T1-out": 4, "MR-T2SPIR": 4}
    assert spec.modality_classifier.held_out_series == four
    assert classifier.training_series == four  # the final fit: all series, not the members' split
    assert (spec.modality_classifier.folds, spec.modality_classifier.patients) == (5, 8)
    assert "patient-grouped 5-fold" in (spec.modality_classifier.validation or "")
    assert spec.modality_classifier.held_out_accuracy == classifier.held_out.accuracy == 1.0
    assert spec.modality_classifier.held_out_accuracy_per_class == dict.fromkeys(four, 1.0)
    assert classifier.validation_problem(0.95, 4) is None  # the default gate
    # Both members were training at the same time: each worker was alive (from entering the loop to
    # its last report) while the other was.
    intervals = [
        (o.history[-1]["worker_started_at"], o.history[-1]["finished_at"]) for o in report.outcomes
    ]
    (a_start, a_end), (b_start, b_end) = intervals
    assert max(a_start, b_start) < min(a_end, b_end)


def test_rerun_skips_finished_members(trained_ensemble) -> None:
    config, first = trained_ensemble
    again = train_experiment(config)
    assert [o.status for o in again.outcomes] == ["already trained", "already trained"]
    assert again.model_dir == first.model_dir


def test_failing_member_leaves_the_other_intact_and_crash_restarts_from_checkpoint(
    ray_cluster: str, tmp_path: Path
) -> None:
    base = tiny_experiment(tmp_path, "faults")
    members = [m.model_dump(mode="json") for m in base.members]
    members[0].update(epochs=4, max_failures=1, fault={"crash_once_at_epoch": 2})  # dies hard once
    members[1].update(epochs=4, max_failures=0, fault={"fail_at_epoch": 1})  # raises every time
    config = tiny_experiment(tmp_path, "faults", members=members)
    report = train_experiment(config)
    survivor, failed = report.outcomes
    assert survivor.status == "trained"
    assert failed.status == "failed"
    assert "fault injection" in failed.error
    # the crash happened (marker written) and the restarted worker group resumed from a checkpoint
    # (epoch 1's, which the fault waits for Ray to register before it kills the process), not from scratch
    assert (Path(config.storage_root()) / "train" / ".faults" / "dualtail.crashed").is_file()
    assert [h["epoch"] for h in survivor.history] == [0, 1, 2, 3]
    assert (
        survivor.history[-1]["start_epoch"] == 2
    )  # epoch 1's checkpoint was registered before the crash
    spec = load_spec(report.model_dir)
    assert [m.name for m in spec.members] == ["dualtail"]


def test_killed_training_resumes_from_last_epoch(ray_cluster: str, tmp_path: Path) -> None:
    base = tiny_experiment(tmp_path, "resume")
    members = [m.model_dump(mode="json") for m in base.members][:1]
    members[0].update(epochs=6)
    config = tiny_experiment(tmp_path, "resume", members=members)
    config_file = tmp_path / "resume.yaml"
    config_file.write_text(dump_config(config))
    run_dir = Path(config.storage_root()) / "train" / "dualtail"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    driver = subprocess.Popen(
        [sys.executable, "-m", "organseg.cli", "train", str(config_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    snapshot = run_dir / "checkpoint_manager_snapshot.json"

    def registered_epoch() -> int:
        """The latest checkpoint Ray Train has registered (what a resume continues from)."""
        try:
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"][
                "checkpoint_dir_name"
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return -1
        return int(latest.split("-")[1])

    try:
        deadline = time.monotonic() + 240
        while registered_epoch() < 2 and time.monotonic() < deadline:
            assert driver.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.2)
        killed_after = registered_epoch()
        assert killed_after >= 2, "no checkpoint was registered in time"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    report = train_experiment(config)
    (outcome,) = report.outcomes
    assert outcome.status == "trained"
    # continued right after the last checkpoint registered before the kill, not from scratch
    assert outcome.history[-1]["start_epoch"] >= killed_after + 1
    assert [h["epoch"] for h in outcome.history] == list(range(6))


def test_member_with_two_workers_trains_data_parallel(ray_cluster: str, tmp_path: Path) -> None:
    base = tiny_experiment(tmp_path, "ddp")
    members = [m.model_dump(mode="json") for m in base.members][:1]
    members[0].update(epochs=1, num_workers=2, cpus_per_worker=0.5)
    config = tiny_experiment(tmp_path, "ddp", members=members)
    (outcome,) = train_experiment(config).outcomes
    assert outcome.status == "trained"
    assert (
        outcome.history[-1]["world_size"] == 2
    )  # one DDP process group of two ranks (gloo on CPU)


def test_changed_member_refuses_to_resume_silently(trained_ensemble, tmp_path: Path) -> None:
    from organseg.errors import ConfigError

    config, _ = trained_ensemble
    changed = config.model_copy(deep=True)
    changed.members[0] = changed.members[0].model_copy(update={"batch_size": 4})
    with pytest.raises(ConfigError, match="--restart"):
        train_experiment(changed)


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path, "yaml")
    data = yaml.safe_load(dump_config(config))
    assert data["members"][0]["arch"] == "dualtail"
