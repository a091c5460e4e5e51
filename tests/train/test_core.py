"""The trainer core runs without Ray: build, epochs, validation, checkpoint files, restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from organseg.train.core import (
    MEMBER_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    MemberTrainer,
    TrainPayload,
    load_state,
)
from organseg.train.data import prepare_data
from organseg.train.launcher import member_payload, plan_member
from tests.conftest import tiny_experiment

VOLUMETRIC = {
    "name": "u3d",
    "arch": "unet3d_fullres",
    "kwargs": {"base_channels": 4, "depth": 3},
    "epochs": 2,
    "batch_size": 2,
    "modalities": ["CT"],
    "volume": {"spacing": [4.0, 4.0, 4.0], "patch": [8, 32, 32], "patches_per_volume": 2},
}


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> TrainPayload:
    config = tiny_experiment(tmp_path_factory.mktemp("core"), "core")
    return _payload(
        config, config.members[0].model_copy(update={"epochs": 3, "steps_per_epoch": 2})
    )


def _payload(config, member) -> TrainPayload:
    data = prepare_data(config)
    return member_payload(config, plan_member(config, member, data), data)


def test_epochs_checkpoint_and_restore_without_ray(payload: TrainPayload, tmp_path: Path) -> None:
    trainer = MemberTrainer(payload)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert list(trainer.epochs()) == [0, 1, 2]
    result = trainer.run_epoch(0)
    assert result.metrics["epoch"] == 0
    assert 0.0 <= result.metrics["val_dice"] <= 1.0
    assert result.metrics["train_loss"] == result.metrics["train_loss"]  # finite, not NaN
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "one epoch changed no weight"

    trainer.write_checkpoint(tmp_path, result)
    for name in (STATE_FILE, WEIGHTS_FILE, MEMBER_FILE):
        assert (tmp_path / name).is_file()
    described = json.loads((tmp_path / MEMBER_FILE).read_text())
    assert described["epoch"] == 0
    assert described["organs"] == payload.organs

    restored = MemberTrainer(payload, state=load_state(tmp_path))
    assert list(restored.epochs()) == [1, 2]
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[key], value)
    assert restored.optimizer.state_dict()["state"], "optimiser moments were not restored"
    second = restored.run_epoch(1)
    assert [h["epoch"] for h in second.history] == [0, 1]
    assert second.metrics["start_epoch"] == 1


def test_mixed_precision_and_loader_workers_on_cpu(payload: TrainPayload) -> None:
    from organseg.errors import ConfigError
    from organseg.train.core import loader_options
    from organseg.train.steps import training_precision

    assert training_precision(None, torch.device("cpu")) == "fp32"
    with pytest.raises(ConfigError, match="needs a GPU"):
        training_precision("fp16", torch.device("cpu"))
    member = payload.member.model_copy(
        update={"precision": "bf16", "loader_workers": 1, "epochs": 1}
    )
    trainer = MemberTrainer(payload.model_copy(update={"member": member}))
    assert trainer.loader.num_workers == 1  # batches prepared in another process
    metrics = trainer.run_epoch(0).metrics
    assert metrics["precision"] == "bf16"
    assert metrics["train_loss"] == metrics["train_loss"]  # finite under bf16 autocast
    assert 0.0 <= metrics["data_wait_fraction"] <= 1.0
    assert next(trainer.model.parameters()).dtype == torch.float32  # mixed: fp32 master weights
    from organseg.config import MemberConfig

    fp32_member = MemberConfig.model_validate(payload.member)
    assert loader_options(fp32_member, torch.device("cpu")) == {
        "num_workers": 0,
        "pin_memory": False,
    }
    gpu = loader_options(
        fp32_member.model_copy(update={"cpus_per_worker": 4}), torch.device("cuda")
    )
    assert gpu == {"num_workers": 3, "pin_memory": True}


def test_volumetric_member_trains_on_patches_with_the_same_core(tmp_path: Path) -> None:
    base = tiny_experiment(tmp_path, "core3d")
    config = tiny_experiment(
        tmp_path, "core3d", members=[*base.model_dump()["members"], VOLUMETRIC]
    )
    trainer = MemberTrainer(_payload(config, config.member("u3d")))
    x, y = next(iter(trainer.loader))
    assert x.shape == (2, 1, 8, 32, 32)
    assert y.shape == (2, 1, 8, 32, 32)
    result = trainer.run_epoch(0)
    assert 0.0 <= result.metrics["val_dice"] <= 1.0
    assert result.metrics["train_loss"] == result.metrics["train_loss"]


def test_nnunet_sgd_and_poly_schedule() -> None:
    from pydantic import ValidationError

    from organseg.config import MemberConfig
    from organseg.train.core import build_optimizer, build_scheduler

    member = MemberConfig.model_validate(
        {
            **VOLUMETRIC,
            "epochs": 10,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True},
            "scheduler": {"poly_exponent": 0.9},
        }
    )
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer(member, [weight])
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"]) == (0.99, True)
    scheduler = build_scheduler(member, optimizer)
    rates = []
    for _ in range(member.epochs):
        rates.append(group["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.01 * (1 - e / 10) ** 0.9 for e in range(10)]
    assert rates == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValidationError, match="not both"):
        MemberConfig.model_validate(
            {**VOLUMETRIC, "scheduler": {"poly_exponent": 0.9, "milestones": [3]}}
        )


def test_a_changed_member_is_refused_naming_the_callers_own_restart_option(tmp_path) -> None:
    """``organseg train`` says --restart, the quickstart --clean: each names an option it has."""
    import json

    import pytest

    from organseg.errors import ConfigError
    from organseg.train.launcher import RUN_FILE, _previous_outcome

    (tmp_path / RUN_FILE).write_text(json.dumps({"fingerprint": "before"}))
    with pytest.raises(ConfigError, match=r"changed since its run .*; pass --restart to train"):
        _previous_outcome(str(tmp_path), "after", False, "m")
    with pytest.raises(ConfigError, match="; pass --clean to train it from scratch"):
        _previous_outcome(str(tmp_path), "after", False, "m", "pass --clean")
