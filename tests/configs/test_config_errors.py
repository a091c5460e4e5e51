"""A bad experiment config is one ConfigError naming the file and the dotted key of every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from organseg.config import load_config
from organseg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tiny() -> dict:
    return yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    header, *lines = str(caught.value).splitlines()
    assert header.startswith(f"{path}: invalid configuration")
    for line in lines:
        assert line.strip().startswith(f"{path}: "), line
    return [line.strip().removeprefix(f"{path}: ") for line in lines]


def test_unknown_task_names_file_and_key(tmp_path: Path) -> None:
    data = _tiny() | {"task": 7}
    assert _problems(_write(tmp_path, data)) == [
        "task: task must be one of [1, 2, 3, 4, 5] (CHAOS tasks), got 7"
    ]


def test_unknown_modality_names_the_list_item_and_never_offers_unknown(tmp_path: Path) -> None:
    data = _tiny()
    data["members"][0]["modalities"] = ["CT", "T3"]
    (problem,) = _problems(_write(tmp_path, data))
    key, _, message = problem.partition(": ")
    assert key == "members.0.modalities.1"
    assert "'T3'" in message
    assert "'CT'" in message
    assert "MR-T2SPIR" in message
    assert "unknown" not in message.replace("unknown modality", "")


def test_unknown_is_not_a_modality_a_member_can_learn(tmp_path: Path) -> None:
    data = _tiny()
    data["members"][0]["modalities"] = ["unknown"]
    (problem,) = _problems(_write(tmp_path, data))
    assert problem.startswith("members.0.modalities.0: unknown modality 'unknown'")


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    data = _tiny() | {"task": 7, "name": "Has Spaces"}
    data["members"][0]["modalities"] = ["T3"]
    data["members"][0]["epochs"] = 0
    data["members"][0]["arch"] = "no_such_net"
    data["members"][0]["optimizer"] = {"lr": 2.0, "nam": "adam"}
    keys = [p.partition(": ")[0] for p in _problems(_write(tmp_path, data))]
    assert sorted(keys) == sorted(
        [
            "name",
            "task",
            "members.0.arch",
            "members.0.modalities.0",
            "members.0.optimizer.lr",
            "members.0.optimizer.nam",
            "members.0.epochs",
        ]
    )


def test_cross_field_rules_name_their_keys(tmp_path: Path) -> None:
    data = _tiny()
    member = data["members"][0]
    data["members"] = [
        member | {"in_channels": 2},
        member | {"encoder_weights": "imagenet"},
        member | {"name": member["name"]},
    ]
    data["tune"] = {"members": ["ghost"], "lr": {"low": 1e-3, "high": 1e-4}}
    data["postprocess"] = {"threshold": 0.7, "component_threshold": 0.6}
    keys = [p.partition(": ")[0] for p in _problems(_write(tmp_path, data))]
    assert "tune.lr.high" in keys
    assert "postprocess.component_threshold" in keys
    # the experiment-level rules run once the sections themselves are valid
    data.pop("tune")
    data.pop("postprocess")
    keys = [p.partition(": ")[0] for p in _problems(_write(tmp_path, data))]
    assert keys == [
        "members.0.name",
        "members.1.name",
        "members.2.name",
        "members.0.in_channels",
        "members.1.encoder_weights",
    ]


def test_unknown_kwarg_names_the_member_key(tmp_path: Path) -> None:
    data = _tiny()
    data["members"][0]["kwargs"] = {"no_such_parameter": 1}
    (problem,) = _problems(_write(tmp_path, data))
    assert problem.startswith("members.0.kwargs: arch ")
    assert "no_such_parameter" in problem


def test_cli_check_prints_every_problem_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = _tiny() | {"task": 7}
    data["members"][0]["modalities"] = ["T3"]
    path = _write(tmp_path, data)
    result = subprocess.run(
        [sys.executable, "-m", "organseg.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: task:" in result.stderr
    assert f"{path}: members.0.modalities.0:" in result.stderr
