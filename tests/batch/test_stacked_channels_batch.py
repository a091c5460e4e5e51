"""``organseg batch`` with a model that stacks a dataset's channels (CT arterial + venous phase): an
nnU-Net case is one study of all its channel files, one output row whose labels equal
``predict --local``'s; a case missing a channel is a ``refused`` row naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.batch.discover import discover
from organseg.batch.run import plan_run
from organseg.batch.work import make_predictor, predict_stage, read_stage, write_stage
from organseg.ensemble.inputs import channel_pairs, plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor
from tests.train.test_stacked_channels import train_stacked


@pytest.fixture(scope="module")
def model_and_cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two-channel model, and a dataset whose ``imagesTs`` holds case 1 whole and case 2 without
    its venous channel."""
    root = tmp_path_factory.mktemp("batch-phases")
    model_dir, dataset = train_stacked(root)
    cases = root / "cases"
    (cases / "imagesTs").mkdir(parents=True)
    for name in ("synth_001_0000", "synth_001_0001", "synth_002_0000"):
        shutil.copy(dataset / "imagesTr" / f"{name}.nii.gz", cases / "imagesTs")
    return model_dir, cases


def test_a_case_is_one_row_and_a_missing_channel_is_refused(
    model_and_cases: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, cases = model_and_cases
    items = discover(cases, channels=("arterial", "venous"))
    assert len(items) == 2
    whole = next(i for i in items if "synth_001" in i.source)
    assert [Path(f).name for f in whole.channel_files] == [
        "synth_001_0000.nii.gz",
        "synth_001_0001.nii.gz",
    ]
    plan = plan_run(cases, tmp_path / "out", model_dir, device="cpu")
    (refused,) = plan.finished
    assert refused["status"] == "refused"
    assert "synth_002 lacks channel(s) venous (_0001)" in refused["reason"]
    backend = make_predictor(plan.settings)
    (carrier,) = plan.todo
    row = write_stage(
        predict_stage(read_stage(carrier, plan.settings), backend, plan.settings.out),
        plan.settings,
    ).row
    assert row["status"] == "done", row
    assert "channels arterial, venous stacked" in row["modality_reason"]
    local = EnsemblePredictor(model_dir, device="cpu")
    (item,) = [
        p.load()
        for p in plan_inputs(
            cases / "imagesTs" / "synth_001_0000.nii.gz",
            channels=channel_pairs(local.spec.preprocess),
        )
    ]
    expected = local.predict(item.image, channels=item.channels).labels.array
    written = sitk.GetArrayFromImage(sitk.ReadImage(row["output"]))
    assert np.array_equal(written, expected)
