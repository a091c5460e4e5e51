"""The real-case training check keeps working: its split, and one tiny end-to-end run on the CHAOS CT case."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from organseg.io import Geometry

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_case_train.py"


def _load_script():
    if (
        str(SCRIPT.parent) not in sys.path
    ):  # the script imports its sibling _sample, as when run directly
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("real_case_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_split_is_disjoint_and_complete() -> None:
    train, val = _load_script().split_slices(78, "interleaved", every=5, offset=2)
    assert val.tolist() == list(range(2, 78, 5))
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(78))


def test_block_split_is_contiguous_inside_the_liver() -> None:
    liver = np.arange(7, 78)
    train, val = _load_script().split_slices(78, "block", block=15, liver_slices=liver)
    assert val.tolist() == list(range(35, 50))  # centred on the liver's middle slice 42
    assert np.union1d(train, val).tolist() == list(range(78))
    with pytest.raises(ValueError, match="block"):
        _load_script().split_slices(10, "block", block=10)


def test_slab_geometry_puts_every_kth_slice_on_a_regular_grid() -> None:
    geometry = Geometry(spacing=(0.7, 0.7, 2.0), origin=(1.0, 2.0, 100.0),
                        direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))  # fmt: skip
    slab = _load_script().slab_geometry(geometry, first=2, step=5)
    assert slab.spacing == pytest.approx((0.7, 0.7, 10.0))
    # slice 2 lies 4 mm along the (negative) z direction from the origin
    assert slab.origin == pytest.approx((1.0, 2.0, 96.0))
    assert slab.direction == geometry.direction


@pytest.mark.sample
def test_smoke_run_on_the_real_case(chaos_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "ORGANSEG_CHAOS_SAMPLE": str(chaos_sample)}
    args = ["--epochs", "1", "--size", "64", "--base-channels", "4", "--depth", "3"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3D liver Dice" in proc.stdout
    result = json.loads(out.read_text())
    assert len(result["val_slices"]) == 16
    assert len(result["train_slices"]) == 62
    assert len(result["history"]) == 1
    assert np.isfinite(result["history"][0]["loss"])
    for key in ("val_dice_liver_3d", "val_dice_liver_3d_postprocessed", "val_slice_dice_mean"):
        assert 0.0 <= result[key] <= 1.0
    assert result["chaos_liver"]["ref_voxels"] > 0
    assert result["slab_spacing"][2] == pytest.approx(10.0)  # 2 mm slices, every 5th
