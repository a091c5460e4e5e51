"""Scoring a folder of predictions against a CHAOS-layout dataset (synthetic DICOM + PNG masks)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from organseg.cli import app
from organseg.errors import DataError
from organseg.io import discover_cases, load_case, read_dicom_geometry, write_volume_file
from organseg.io.png import read_mask_series, write_png_series
from organseg.io.volume import Volume
from organseg.metrics.chaos import evaluate_masks
from organseg.metrics.dataset import CSV_COLUMNS, TASKS, evaluate_dataset
from organseg.organs import ORGAN_LABELS


def labels_of(synth_root: Path, case_id: str) -> np.ndarray:
    ref = next(r for r in discover_cases(synth_root) if r.case_id == case_id)
    return read_mask_series(ref.mask_dir, ref.modality).array


@pytest.fixture(scope="module")
def predictions(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every layout the evaluator accepts, with known defects:

    CT/1 perfect (CHAOS ``Results/``), CT/2 eroded liver (NIfTI), MR/1 the CHAOS submission folders
    (``T1DUAL`` shared by in/out phase, spleen missing there), MR/2 explicit in/out-phase folders and
    no T2SPIR prediction at all.
    """
    root = tmp_path_factory.mktemp("predictions")
    train = synth_root / "Train_Sets"
    shutil.copytree(train / "CT" / "1" / "Ground", root / "CT" / "1" / "Results")

    ct2 = labels_of(synth_root, "CT/2")
    eroded = ndimage.binary_erosion(ct2 > 0).astype(np.uint8)
    geometry, _, _ = read_dicom_geometry(train / "CT" / "2" / "DICOM_anon")
    write_volume_file(Volume(eroded, geometry), root / "CT" / "2.nii.gz")

    t1 = labels_of(synth_root, "MR/1/T1DUAL-in").copy()
    t1[t1 == ORGAN_LABELS["spleen"]] = 0
    write_png_series(t1, root / "MR" / "1" / "T1DUAL" / "Results", "MR-T1-in")
    t2 = labels_of(synth_root, "MR/1/T2SPIR")
    write_png_series(t2, root / "MR" / "1" / "T2SPIR" / "Results", "MR-T2SPIR")
    for phase in ("in", "out"):
        mr2 = labels_of(synth_root, "MR/2/T1DUAL-in")
        write_png_series(mr2, root / "MR" / "2" / f"T1DUAL-{phase}", "MR-T1-in")
    return root


def test_every_layout_is_found_and_scored(synth_root: Path, predictions: Path) -> None:
    report = evaluate_dataset(synth_root, predictions)
    scored = [c.case_id for c in report.cases]
    assert scored == [
        "CT/1",
        "CT/2",
        "MR/1/T1DUAL-in",
        "MR/1/T2SPIR",
        "MR/2/T1DUAL-in",
        "MR/2/T1DUAL-out",
    ]
    assert report.missing == [
        "MR/2/T2SPIR"
    ]  # MR/1/T1DUAL-out is covered by the shared T1DUAL folder
    by_id = {c.case_id: c for c in report.cases}

    assert list(by_id["CT/1"].organs) == ["liver"]
    assert by_id["CT/1"].organs["liver"].score == 100.0

    # CT/2 goes through a NIfTI file yet is measured on the DICOM geometry, like the library does.
    ct2 = labels_of(synth_root, "CT/2")
    geometry, _, _ = read_dicom_geometry(synth_root / "Train_Sets" / "CT" / "2" / "DICOM_anon")
    expected = evaluate_masks(ct2, ndimage.binary_erosion(ct2 > 0).astype(np.uint8), geometry)
    assert by_id["CT/2"].organs["liver"] == expected["liver"]
    assert by_id["CT/2"].organs["liver"].dice < 1.0

    mr1 = by_id["MR/1/T1DUAL-in"].organs
    assert list(mr1) == ["liver", "right_kidney", "left_kidney", "spleen"]
    assert mr1["spleen"].empty == "prediction"
    assert mr1["spleen"].score == 0.0
    assert math.isinf(mr1["spleen"].assd)
    assert all(mr1[o].score == 100.0 for o in ("liver", "right_kidney", "left_kidney"))


def test_task_means_cover_the_chaos_tasks(synth_root: Path, predictions: Path) -> None:
    report = evaluate_dataset(synth_root, predictions)
    means = report.task_means()
    assert list(means) == list(TASKS)
    ct_scores = [c.organs["liver"].score for c in report.cases if c.case_id.startswith("CT")]
    assert means["Task 2 (liver, CT)"]["score"] == pytest.approx(np.mean(ct_scores))
    assert means["Task 2 (liver, CT)"]["n"] == 2
    # four scored MR series and the missing MR/2/T2SPIR, four organs each
    assert means["Task 5 (all organs, MR)"]["n"] == 5 * 4
    assert means["Task 5 (all organs, MR)"]["missing"] == 4
    assert means["Task 4 (all organs, CT+MR)"]["n"] == 2 + 20
    assert math.isinf(means["Task 5 (all organs, MR)"]["assd"])  # the missing spleen
    # The missing series' liver counts as score 0, as the challenge counts it: 4 perfect + 1 zero.
    assert means["Task 3 (liver, MR)"]["score"] == pytest.approx(400.0 / 5)
    assert means["Task 3 (liver, MR)"]["dice"] == pytest.approx(4.0 / 5)
    scored_only = [
        m.score for c, o, m in report.rows(with_missing=False) if o == "liver" and c.modality.is_mr
    ]
    assert np.mean(scored_only) == 100.0

    only_ct = evaluate_dataset(synth_root / "Train_Sets" / "CT", predictions)
    assert list(only_ct.task_means()) == ["Task 2 (liver, CT)"]


def test_csv_and_json_from_the_cli(synth_root: Path, predictions: Path, tmp_path: Path) -> None:
    table, scores = tmp_path / "scores.csv", tmp_path / "scores.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(synth_root), str(predictions), "--csv", str(table), "--json", str(scores)],
    )
    assert result.exit_code == 0, result.output
    assert "Task 5 (all organs, MR)" in result.stdout
    assert "counts as score 0" in " ".join(result.output.split())

    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    case_rows = [r for r in rows if r["row"] == "case"]
    assert len(case_rows) == 1 + 1 + 4 + 4 + 4 + 4
    missing_rows = [r for r in rows if r["row"] == "missing"]
    assert [(r["case_id"], r["organ"], r["score"], r["prediction"]) for r in missing_rows] == [
        ("MR/2/T2SPIR", organ, "0.0", "") for organ in ORGAN_LABELS
    ]
    spleen = next(
        r for r in case_rows if r["case_id"] == "MR/1/T1DUAL-in" and r["organ"] == "spleen"
    )
    assert spleen["assd"] == ""  # infinite: no prediction surface
    assert float(spleen["score"]) == 0.0
    assert [r["case_id"] for r in rows if r["row"] == "mean"] == list(TASKS)

    payload = json.loads(scores.read_text())
    assert payload["missing"] == ["MR/2/T2SPIR"]
    assert payload["cases"]["CT/1"]["liver"]["dice"] == 1.0
    assert payload["tasks"]["Task 5 (all organs, MR)"]["assd"] is None


def test_dataset_without_predictions_is_an_error(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no predictions found for the 8 series.*CT/1"):
        evaluate_dataset(synth_root, tmp_path)
    with pytest.raises(DataError, match="predictions folder not found"):
        evaluate_dataset(synth_root, tmp_path / "absent")


def test_dataset_mode_refuses_single_case_options(synth_root: Path, predictions: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(synth_root), str(predictions), "--modality", "CT"]
    )
    assert result.exit_code != 0
    assert "single case" in str(result.exception)


@pytest.mark.parametrize("suffix", [".nii.gz", ".dcm"])
def test_stacked_t1dual_file_covers_both_phases(
    synth_root: Path, tmp_path: Path, suffix: str
) -> None:
    """`organseg predict` names a stacked T1 prediction MR/1/T1DUAL.nii.gz (or .dcm): it scores the
    in-phase series and the out-phase one is not missing, like the CHAOS T1DUAL folder."""
    from organseg.io.outputs import write_labels

    ref = next(r for r in discover_cases(synth_root) if r.case_id == "MR/1/T1DUAL-in")
    labels = read_mask_series(ref.mask_dir, ref.modality, like=load_case(ref).image)
    write_labels(labels, tmp_path / "MR" / "1" / f"T1DUAL{suffix}", source_dicom=ref.image_dir)
    report = evaluate_dataset(synth_root, tmp_path)
    assert [c.case_id for c in report.cases] == ["MR/1/T1DUAL-in"]
    assert all(m.score == 100.0 for m in report.cases[0].organs.values())
    assert "MR/1/T1DUAL-out" not in report.missing
    assert "MR/2/T1DUAL-in" in report.missing
