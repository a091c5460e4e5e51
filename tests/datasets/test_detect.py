"""Which layout a folder is in, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.datasets import detect_format, open_dataset
from organseg.errors import DataError
from tests.datasets.builder import build_msd, build_nnunet, edit_json


def test_each_layout_is_named_with_its_reason(synth_root: Path, tmp_path: Path) -> None:
    nnunet = build_nnunet(tmp_path / "nn")
    msd = build_msd(tmp_path / "msd")
    assert detect_format(nnunet) == (
        "nnunet",
        f"{nnunet}/dataset.json has channel_names (nnU-Net v2 raw)",
    )
    assert detect_format(msd) == (
        "msd",
        f"{msd}/dataset.json has modality (Medical Segmentation Decathlon)",
    )
    found = detect_format(synth_root)
    assert found is not None
    assert found[0] == "chaos"
    assert "8 series in the CHAOS layout" in found[1]
    assert detect_format(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert detect_format(tmp_path / "empty") is None


def test_nnunet_without_channel_names_is_still_nnunet(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "nn")
    edit_json(root / "dataset.json", channel_names=None)
    kind, reason = detect_format(root)  # type: ignore[misc]
    assert kind == "nnunet"
    assert "needs channel_names" in reason
    assert any(p.where.endswith("dataset.json: channel_names") for p in open_dataset(root).check())


def test_open_dataset_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an nnU-Net, MSD or CHAOS dataset"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match=r"dataset.format: 'decathlon' is not one of"):
        open_dataset(tmp_path / "empty", "decathlon")
