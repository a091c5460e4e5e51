"""`organseg data inspect` names what is wrong where a user can act on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli_folded


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    return run_cli_folded(capsys, *args)


def test_gap_names_the_slices_around_the_missing_one(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "series"
    shutil.copytree(synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon", series)
    files = sorted(series.iterdir())
    files[4].unlink()  # i0004 is missing
    code, output = run(capsys, "data", "inspect", series)
    assert code == 1  # a series folder is stacked by position, as predict reads it: refused
    assert "1 slice(s) missing" in output
    assert f"InstanceNumber 6 ({files[5].name}) and InstanceNumber 4 ({files[3].name})" in output


def test_one_dicom_file_points_at_its_folder(
    synth_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon"
    code, output = run(capsys, "data", "inspect", sorted(folder.iterdir())[0])
    assert code == 2
    assert f"one DICOM file; a series is read from its folder: use {folder}" in output
