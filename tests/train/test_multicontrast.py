"""cascade3d on multi-contrast MR: T1 in, T1 out and the registered T2-SPIR as three input channels.

Trained through the real trainer core (no Ray), exported, and predicted from a CHAOS MR case folder
with all three series; a missing T2-SPIR is a clear error, never a silently 2-channel input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from organseg.config import parse_config
from organseg.ensemble.inputs import plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor, prepare_input
from organseg.ensemble.sliding import feet_first
from organseg.errors import ConfigError, DataError
from organseg.models.registry import create_member
from organseg.train.core import MemberTrainer
from organseg.train.data import prepare_data
from organseg.train.export import export_model_dir
from organseg.train.launcher import member_payload, plan_member

CASCADE = {
    "name": "cascade3d-mc",
    "arch": "cascade3d",
    "kwargs": {
        "net1_levels": 3, "net1_channels": 4, "net2_levels": 3, "net2_channels": 8,
        "crop_size": [8, 32, 32],
    },
    "in_channels": 3,
    "modalities": ["MR-T1-in"],
    "loss": "dice",
    "epochs": 2,
    "batch_size": 2,
    "optimizer": {"lr": 3.0e-3},
    "volume": {"spacing": [6.0, 6.0, 6.0], "patch": [8, 32, 32], "patches_per_volume": 2},
}  # fmt: skip


def _config(root: Path, **preprocess: object):
    return parse_config(
        {
            "name": "mc",
            "task": 3,
            "storage_path": str(root / "runs"),
            "dataset": {
                "synthetic": {"ct": 0, "mr": 2, "size": 64, "slices": 16, "seed": 1},
                "val_fraction": 0.5,
                "cache_dir": str(root / "cache"),
            },
            "preprocess": {"size": 64, "t1_mode": "stack", "t2_channel": True, **preprocess},
            "augment": {"enabled": False},
            "members": [CASCADE],
        }
    )


def test_cascade3d_takes_three_channels_forward_and_backward() -> None:
    model = create_member("cascade3d", 3, 1, **CASCADE["kwargs"])
    x = torch.randn(2, 3, 8, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, 8, 32, 32)
    out.mean().backward()
    grad = x.grad.abs().flatten(2).sum(-1)  # every contrast reaches the output
    assert bool((grad > 0).all())


def test_config_needs_three_channels_and_stacked_t1(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="in_channels: 3"):
        parse_config({**_config(tmp_path).model_dump(mode="json"),
                      "members": [{**CASCADE, "in_channels": 2}]})  # fmt: skip
    with pytest.raises(ConfigError, match="t1_mode: stack"):
        _config(tmp_path, t1_mode="separate")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_multicontrast(tmp_path_factory.mktemp("multicontrast"))


def train_multicontrast(root: Path) -> tuple[Path, Path]:
    """Train the 3-channel cascade for two epochs through the trainer core and export it:
    ``(model directory, synthetic dataset root)``."""
    config = _config(root)
    data = prepare_data(config)
    t1 = data.cache.sample("MR/1/T1DUAL")
    assert t1.channels == 3
    assert [m.value for m in t1.modalities] == ["MR-T1-in", "MR-T1-out", "MR-T2SPIR"]
    member = config.member("cascade3d-mc")
    plan = plan_member(config, member, data)
    payload = member_payload(config, plan, data)
    trainer = MemberTrainer(payload)
    x, _ = next(iter(trainer.loader))
    assert x.shape == (2, 3, 8, 32, 32)  # T1 in, T1 out, registered T2
    for epoch in trainer.epochs():
        result = trainer.run_epoch(epoch)
    assert result.metrics["train_loss"] == result.metrics["train_loss"]
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    trainer.write_checkpoint(checkpoint, result)
    model_dir, _ = export_model_dir(
        config, {member.name: str(checkpoint)}, {member.name: plan.organs}
    )
    return model_dir, data.root


def test_prediction_uses_all_three_contrasts(trained: tuple[Path, Path]) -> None:
    model_dir, data_root = trained
    case = data_root / "Train_Sets" / "MR" / "2"
    predictor = EnsemblePredictor(model_dir)
    plans = plan_inputs(case, "MR-T1-in", stack_t1=True, with_t2=True)
    assert [p.case_id for p in plans] == ["MR/2/T1DUAL"]
    item = plans[0].load()
    assert item.t2 is not None
    prediction = predictor.predict(item.image, "MR-T1-in", item.partner, item.t2)
    assert prediction.labels.shape == item.image.shape
    assert prediction.labels.geometry.isclose(item.image.geometry)

    _, prepared = prepare_input(predictor.spec, item.image, "MR-T1-in", item.partner, item.t2)
    assert prepared.channels == 3
    runner = predictor.runner("cascade3d-mc")
    spacing, flip = prepared.prepared_geometry.spacing, feet_first(prepared.geometry)
    with_t2 = runner.run(prepared.array, spacing, flip)
    without = prepared.array.copy()
    without[:, 2] = 0
    assert not np.array_equal(with_t2, runner.run(without, spacing, flip))  # T2 is an input


def test_missing_t2_is_a_clear_error(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, data_root = trained
    predictor = EnsemblePredictor(model_dir)
    item = plan_inputs(data_root / "Train_Sets" / "MR" / "2", "MR-T1-in", True, True)[0].load()
    with pytest.raises(DataError, match="T2-SPIR series is missing"):
        predictor.predict(item.image, "MR-T1-in", item.partner)
    case = tmp_path / "MR" / "2"
    shutil.copytree(data_root / "Train_Sets" / "MR" / "2", case)
    shutil.rmtree(case / "T2SPIR")
    with pytest.raises(DataError, match="no T2SPIR series"):
        plan_inputs(case, "MR-T1-in", stack_t1=True, with_t2=True)


def test_predict_command_reads_all_three_series_of_a_case(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from organseg.cli import main

    model_dir, data_root = trained
    out = tmp_path / "out"
    args = ["predict", str(data_root / "Train_Sets" / "MR" / "2"), "-o", str(out),
            "--local", str(model_dir), "--device", "cpu"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(args)  # exits 1: the model serves MR-T1-in only, so the case's T2SPIR alone is skipped
    captured = capsys.readouterr()
    output = " ".join((captured.out + captured.err).split())
    assert "MR/2/T1DUAL: MR-T1-in" in output
    assert "T1 in+out stacked" in output
    assert (out / "MR" / "2" / "T1DUAL").exists()  # one mask for the three series
