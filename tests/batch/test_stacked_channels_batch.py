"""``organseg batch`` with a model that stacks a dataset's channels (CT arterial + venous phase): an
nnU-Net case is one study of all its channel files, one output row whose labels equal
``predict --local``'s; a case missing a channel is a ``refused`` row naming it. The stages run here
without Ray; ``test_batch_cli_on_a_two_phase_dataset`` runs the real command on the tests' shared
cluster."""

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


@pytest.mark.ray
@pytest.mark.slow
def test_batch_cli_on_a_two_phase_dataset(
    ray_cluster: str, stacked_model: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    """The real ``organseg batch`` on the tests' shared Ray cluster over a two-phase dataset's ``imagesTs``
    and ``imagesTr``: one ``done`` row per whole case, its labels ``predict --local``'s; the case
    missing its venous channel one ``refused`` row naming it; exit code 1."""
    import pyarrow.parquet as pq

    from tests.conftest import run_cli

    model_dir, dataset = stacked_model
    cases = tmp_path / "cases"
    (cases / "imagesTr").mkdir(parents=True)
    (cases / "imagesTs").mkdir()
    for name in ("synth_001_0000", "synth_001_0001"):
        shutil.copy(dataset / "imagesTr" / f"{name}.nii.gz", cases / "imagesTs")
    for name in ("synth_002_0000", "synth_002_0001"):
        shutil.copy(dataset / "imagesTr" / f"{name}.nii.gz", cases / "imagesTr")
    # a third case whose venous channel is missing
    missing = cases / "imagesTs" / "synth_003_0000.nii.gz"
    shutil.copy(dataset / "imagesTr" / "synth_002_0000.nii.gz", missing)
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "batch", cases, "-o", out, "--model", model_dir, "--workers", "1"
    )
    assert code == 1, err
    assert "Traceback" not in err
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["done", "done", "refused"]
    (refused,) = [r for r in rows if r["status"] == "refused"]
    assert "synth_003 lacks channel(s) venous (_0001)" in refused["reason"]
    done = {Path(r["source"]).name: r for r in rows if r["status"] == "done"}
    assert sorted(done) == ["synth_001_0000.nii.gz", "synth_002_0000.nii.gz"], done.keys()
    for name, row in done.items():
        first = next(cases.rglob(name))
        local = tmp_path / f"local-{name}"
        code, _, err = run_cli(
            capsys, "predict", first, "--local", model_dir, "-o", local, "--device", "cpu"
        )
        assert code == 0, err
        batch_labels = sitk.GetArrayFromImage(sitk.ReadImage(row["output"]))
        assert np.array_equal(batch_labels, sitk.GetArrayFromImage(sitk.ReadImage(str(local))))
        assert "channels arterial, venous stacked" in row["modality_reason"]
