"""The batch core without Ray: each series read, segmented and written exactly as `predict --local`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.batch.records import load_records
from organseg.batch.run import plan_run
from organseg.batch.work import make_predictor, predict_stage, read_stage, write_stage
from organseg.cli import main
from tests.batch.conftest import Archive


def predict_local(model: Path, source: Path, out: Path) -> Path:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(source), "-o", str(out), "--local", str(model), "--device", "cpu"])
    assert exit_info.value.code == 0
    return out


def run_sequentially(archive: Archive, model: Path, out: Path, fmt: str = "nifti") -> list[dict]:
    plan = plan_run(archive.root, out, model, fmt, device="cpu")
    backend = make_predictor(plan.settings)
    rows = list(plan.finished)
    for carrier in plan.todo:
        carrier = read_stage(carrier, plan.settings)
        carrier = predict_stage(carrier, backend, plan.settings.out)
        rows.append(write_stage(carrier, plan.settings).row)
    return rows


@pytest.fixture(scope="module")
def sequential(archive: Archive, batch_model: Path, tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("seq") / "out"
    return out, run_sequentially(archive, batch_model, out)


def test_every_series_one_row_with_the_right_status(archive: Archive, sequential) -> None:
    _, rows = sequential
    assert len(rows) == archive.series_count == len({r["key"] for r in rows})
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("done", "refused", "failed")}
    assert len(by_status["done"]) == len(archive.good_ct) + 1  # + the NIfTI file
    assert not by_status["failed"]
    reasons = [r["reason"] for r in by_status["refused"]]
    assert sum("serves ['CT']" in r for r in reasons) == len(archive.mr)
    assert any("truncated" in r or "bytes but the file holds" in r for r in reasons)
    assert any("missing" in r or "same position" in r for r in reasons)


def test_outputs_equal_predict_local_bit_for_bit(
    archive: Archive, batch_model: Path, sequential, tmp_path: Path
) -> None:
    _, rows = sequential
    done = {r["series_uid"]: r for r in rows if r["status"] == "done" and r["series_uid"]}
    import pydicom

    checked = 0
    for name in archive.good_ct:
        source = archive.sources[name]
        uid = str(
            pydicom.dcmread(next(source.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
        )
        ours = sitk.ReadImage(done[uid]["output"])
        theirs = sitk.ReadImage(
            str(predict_local(batch_model, source, tmp_path / f"{name}.nii.gz"))
        )
        assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs)), name
        assert sitk.GetArrayFromImage(ours).any(), "a mask that depends on the pixels"
        assert ours.GetSpacing() == theirs.GetSpacing()
        assert ours.GetOrigin() == theirs.GetOrigin()
        assert ours.GetDirection() == theirs.GetDirection()
        checked += 1
    assert checked == len(archive.good_ct)


def test_no_patient_data_in_rows_records_or_names(archive: Archive, sequential) -> None:
    out, rows = sequential
    text = json.dumps(rows) + "".join(p.name for p in out.rglob("*"))
    text += "".join(json.dumps(r) for r in load_records(out).values())
    assert "SYNTH^" not in text
    assert "PatientID" not in text
    for row in rows:
        assert row["output"] == "" or Path(row["output"]).name.startswith(row["key"])


def test_done_records_make_the_plan_skip(archive: Archive, batch_model: Path, sequential) -> None:
    out, rows = sequential
    plan = plan_run(archive.root, out, batch_model, "nifti", device="cpu")
    assert plan.todo == []
    assert {r["key"] for r in plan.finished} == {r["key"] for r in rows}
    assert all(r["resumed"] for r in plan.finished if r["status"] == "done")


def test_another_models_results_are_not_replaced_silently(
    archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    from organseg.batch.records import write_record
    from organseg.errors import OrgansegError

    write_record(tmp_path, {"key": "abc", "status": "done", "model_version": "other:123"})
    with pytest.raises(OrgansegError, match="other:123"):
        plan_run(archive.root, tmp_path, batch_model)
    assert plan_run(archive.root, tmp_path, batch_model, overwrite=True).todo


def test_dicom_seg_for_a_volume_file_is_refused_before_reading(
    archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    plan = plan_run(archive.root, tmp_path, batch_model, "dicom-seg")
    (row,) = [r for r in plan.finished if r["source"].endswith(".nii.gz")]
    assert row["status"] == "refused"
    assert "DICOM-SEG" in row["reason"]
    assert len(plan.todo) == archive.series_count - 1
