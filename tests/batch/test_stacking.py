"""A model that stacks T1 in- and out-of-phase: a study's two phases found in a DICOM tree are
segmented as one input, exactly as `predict --local` stacks them; a study without its partner is
refused naming what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.batch.discover import SeriesItem, discover
from organseg.batch.run import plan_run
from organseg.batch.work import make_predictor, predict_stage, read_stage, write_stage
from organseg.cli import main
from tests.batch.conftest import StackArchive


def _rows(stack: StackArchive, model: Path, out: Path) -> list[dict]:
    plan = plan_run(stack.root, out, model, device="cpu")
    backend = make_predictor(plan.settings)
    rows = list(plan.finished)
    for carrier in plan.todo:
        carrier = predict_stage(read_stage(carrier, plan.settings), backend, plan.settings.out)
        rows.append(write_stage(carrier, plan.settings).row)
    return rows


@pytest.fixture(scope="module")
def stacked_rows(stack_archive: StackArchive, batch_stack_model: Path, tmp_path_factory):
    return _rows(stack_archive, batch_stack_model, tmp_path_factory.mktemp("stack") / "out")


def test_discovery_gathers_the_phases_of_one_study(stack_archive: StackArchive) -> None:
    alone = discover(stack_archive.root)
    assert len(alone) == 6, "without stacking: every series (and each echo) on its own"
    items = discover(stack_archive.root, stack_t1=True)
    assert len(items) == stack_archive.series_count
    stacked = sorted(len(i.stacked) for i in items)
    assert stacked == [0, 1, 2, 2], "T2-SPIR alone, study 3's in-phase alone, two pairs"
    dual = next(i for i in items if "STK2" in i.source)
    assert len({s["series_uid"] for s in dual.stacked}) == 1, "one dual-echo series, two echoes"
    assert [s["label"].endswith(" ms") for s in dual.stacked] == [True, True]
    assert SeriesItem.from_dict(json.loads(json.dumps(dual.as_dict()))) == dual, "travels as JSON"


def _predict_local(model: Path, case: Path, out: Path) -> sitk.Image:
    """`predict --local` on the case's T1 phases (it stacks them from the CHAOS layout)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(case), "-o", str(out), "--local", str(model), "--device", "cpu",
              "--modality", "MR-T1-in"])  # fmt: skip
    assert exit_info.value.code == 0
    return sitk.ReadImage(str(out))


def _physical(image: sitk.Image) -> tuple[np.ndarray, tuple, tuple]:
    """The label map in one patient orientation: the CHAOS layout reads slices in file-name order,
    a DICOM tree (as serving) by their positions; the same labels at the same places are equal."""
    oriented = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(oriented), oriented.GetOrigin(), oriented.GetSpacing()


def test_pairs_equal_predict_local_and_a_lone_phase_is_refused(
    stack_archive: StackArchive, batch_stack_model: Path, stacked_rows, tmp_path: Path
) -> None:
    rows = stacked_rows
    assert len(rows) == stack_archive.series_count == len({r["key"] for r in rows})
    by_study = {name: [r for r in rows if f"/STK{k}/" in r["source"] + "/"] for k, name in
                ((1, "separate"), (2, "dual-echo"), (3, "lone"))}  # fmt: skip
    for name, case in stack_archive.paired.items():
        (row,) = [r for r in by_study[name] if r["status"] == "done"]
        assert row["modality"] == "MR-T1-in"
        assert " + " in row["series"], "the row names both series"
        ours = _physical(sitk.ReadImage(row["output"]))
        theirs = _physical(_predict_local(batch_stack_model, case, tmp_path / f"{name}.nii.gz"))
        assert ours[0].any(), "a mask that depends on the pixels"
        assert np.array_equal(ours[0], theirs[0]), name
        assert np.allclose(ours[1], theirs[1]), name
        assert np.allclose(ours[2], theirs[2]), name
    (t2,) = [r for r in by_study["separate"] if r["status"] != "done"]
    assert t2["status"] == "refused"
    assert "MR-T2SPIR" in t2["reason"]
    (lone,) = by_study["lone"]
    assert lone["status"] == "refused"
    assert "but not the T1 out-of-phase series" in lone["reason"], lone["reason"]
    assert "add it to the input" in lone["reason"]
    assert not [r for r in rows if r["status"] == "failed"]
