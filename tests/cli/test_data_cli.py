"""`organseg data synth --format`, `data inspect` on nnU-Net/MSD datasets and `data convert`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import run_cli as run
from tests.datasets.builder import build_nnunet, edit_json
from tests.docs.blocks import block_under, command_lines


def test_synth_nnunet_and_msd_then_inspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("nnunet", "msd"):
        root = tmp_path / fmt
        code, out, _ = run(
            capsys,
            "data",
            "synth",
            root,
            "--format",
            fmt,
            "--ct",
            "2",
            "--size",
            "32",
            "--slices",
            "8",
        )
        assert code == 0
        assert f"wrote 2 synthetic CT cases with 9 labels as a {fmt} dataset" in out
        code, out, err = run(capsys, "data", "inspect", root, "--json")
        assert code == 0, err
        record = json.loads(out)
        assert record["format"] == fmt
        assert "dataset.json has" in record["reason"]
        assert record["problems"] == []
        assert [c["case"] for c in record["cases"]] == [
            "synth_001",
            "synth_002",
        ]
        assert len(record["cases"][0]["labels"]) == 9
        assert record["cases"][0]["shape"] == [8, 32, 32]
        code, out, _ = run(capsys, "data", "inspect", root)
        assert code == 0
        assert f"format: {fmt} ({root}/dataset.json has" in " ".join(out.split())
        assert "labels: 1 liver, 2 right_kidney" in out


def test_inspect_lists_every_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_nnunet(tmp_path / "ds", cases=("a", "b", "c"))
    (root / "imagesTr" / "b_0000.nii.gz").unlink()
    edit_json(root / "dataset.json", numTraining=4)
    code, out, err = run(capsys, "data", "inspect", root)
    assert code == 1
    assert f"error: {root}/imagesTr/b_0000.nii.gz: missing: channel 0 ('CT') of case b" in err
    assert (
        f"error: {root}/dataset.json: numTraining: is 4 but imagesTr/labelsTr hold 3 case(s)" in err
    )
    assert "│ a " in out
    assert "│ c " in out
    assert "│ b " not in out


def test_synth_refuses_what_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "data", "synth", tmp_path / "x", "--format", "nnunet", "--mr", "1")
    assert code != 0
    assert "--mr: the synthetic nnunet dataset is CT only" in err
    code, _, err = run(capsys, "data", "synth", tmp_path / "x", "--format", "dicom")
    assert code != 0
    assert "--format: 'dicom' is not one of chaos, nnunet, msd" in err


def test_chaos_inspect_keeps_its_stdout(
    synth_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "data", "inspect", synth_root / "Train_Sets" / "CT", "--json")
    assert code == 0
    records = json.loads(out)  # the CHAOS report: a list of series records, as before
    assert [r["case"] for r in records] == ["CT/1", "CT/2"]
    assert "format: chaos" in err


def test_convert_chaos_to_nnunet(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "nnunet"
    code, out, err = run(
        capsys, "data", "convert", synth_root / "Train_Sets" / "CT", "--to", "nnunet", out_dir
    )
    assert code == 0, err
    assert out.split() == ["wrote", str(out_dir / "Dataset501_CHAOSCT")]
    code, out, err = run(capsys, "data", "inspect", out_dir / "Dataset501_CHAOSCT", "--json")
    assert code == 0
    assert json.loads(out)["labels"] == {"background": 0, "liver": 1}
    code, _, err = run(
        capsys, "data", "convert", out_dir / "Dataset501_CHAOSCT", "--to", "nnunet", tmp_path / "y"
    )
    assert code != 0
    assert "a nnunet dataset; convert reads CHAOS datasets" in err
    code, _, err = run(capsys, "data", "convert", synth_root, "--to", "msd", tmp_path / "z")
    assert code != 0
    assert "--to: 'msd' is not supported" in err


def test_docs_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = command_lines(
        block_under(REPO_ROOT / "docs" / "data.md", "Try it on synthetic data")
    )
    monkeypatch.chdir(tmp_path)
    assert len(commands) == 7
    for words in commands:
        assert words[0] == "organseg"
        code, out, err = run(capsys, *words[1:])
        assert code == 0, (words, err)
    # the last command inspected the converted T1 dataset: two channels, the four CHAOS organs
    assert "format: nnunet" in out
    assert "channels: 0000 MR-T1-in, 0001 MR-T1-out" in out
    assert "labels: 1 liver, 2 right_kidney, 3 left_kidney, 4 spleen" in out
