"""The organizers' published numbers for their sample submission, reproduced on the real CHAOS case.

``DICE=0.978 RAVD=0.665 ASSD=0.734 MSSD=14`` is what the organizers' evaluator prints for
``sample-submission`` against ``Ground`` (README of the sample; ``%.3f`` formatting).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from organseg.cli import app
from organseg.io.volume import Modality
from organseg.metrics.chaos import evaluate_masks
from organseg.metrics.inputs import load_pair

pytestmark = pytest.mark.sample

PUBLISHED = {"dice": "0.978", "ravd": "0.665", "assd": "0.734", "mssd": "14.000"}


def paths(root: Path) -> tuple[Path, Path, Path]:
    case = root / "Train_Sets" / "CT" / "1"
    return case / "Ground", root / "sample-submission" / "CT" / "1", case / "DICOM_anon"


def printed(values: dict) -> dict[str, str]:
    return {key: f"{values[key]:.3f}" for key in PUBLISHED}


@pytest.fixture(scope="module")
def sample_input(chaos_sample: Path):
    ground, submission, dicom = paths(chaos_sample)
    return load_pair(ground, submission, dicom=dicom)


def test_library_reproduces_published_numbers(sample_input) -> None:
    assert sample_input.modality is Modality.CT
    assert sample_input.ref_labels.shape == (78, 512, 512)
    liver = evaluate_masks(
        sample_input.ref_labels, sample_input.pred_labels, sample_input.geometry, ["liver"]
    )["liver"]
    assert printed(liver.to_dict()) == PUBLISHED
    assert liver.score == pytest.approx(
        (100 * liver.dice + 100 - 20 * liver.ravd + 100 - 20 / 3 * liver.assd + 100 - 5 / 3 * 14)
        / 4
    )


def test_organizers_affine_and_kdtree_agree_to_the_last_digit(sample_input) -> None:
    """An independent re-derivation of the organizers' coordinates (their M matrix, built from the
    first/last DICOM headers, index order (row, column, slice)) searched with a KD-tree."""
    dicom = Path(sample_input.geometry_source)
    files = sorted(dicom.glob("*.dcm"))
    first, last = pydicom.dcmread(files[0]), pydicom.dcmread(files[-1])
    t1 = np.array(first.ImagePositionPatient, float)
    tn = np.array(last.ImagePositionPatient, float)
    cosines = np.array(first.ImageOrientationPatient, float)
    delta = np.array(first.PixelSpacing, float)
    m = np.column_stack(
        [cosines[:3] * delta[0], cosines[3:] * delta[1], (t1 - tn) / (1 - len(files))]
    )

    def world_border(mask: np.ndarray) -> np.ndarray:
        structure = ndimage.generate_binary_structure(3, 1)
        edge = mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=1)
        z, row, col = np.nonzero(edge)
        return np.column_stack([row, col, z]) @ m.T + t1

    ref = world_border(sample_input.ref_labels != 0)
    seg = world_border(sample_input.pred_labels != 0)
    seg_to_ref, _ = cKDTree(ref).query(seg)
    ref_to_seg, _ = cKDTree(seg).query(ref)
    assd = (seg_to_ref.sum() + ref_to_seg.sum()) / (len(seg_to_ref) + len(ref_to_seg))
    mssd = max(seg_to_ref.max(), ref_to_seg.max())

    ours = evaluate_masks(sample_input.ref_labels, sample_input.pred_labels, sample_input.geometry)
    assert ours["liver"].assd == pytest.approx(assd, rel=1e-9)
    assert ours["liver"].mssd == pytest.approx(mssd, rel=1e-9)


def test_cli_reproduces_published_numbers(chaos_sample: Path, tmp_path: Path) -> None:
    ground, submission, dicom = paths(chaos_sample)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(ground), str(submission), "--dicom", str(dicom), "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    for text in PUBLISHED.values():
        assert text in result.stdout
    scores = json.loads(out.read_text())
    assert list(scores) == ["liver"]
    assert printed(scores["liver"]) == PUBLISHED
    assert {"score", "sensitivity", "specificity", "jaccard", "volume_error_ml"} <= set(
        scores["liver"]
    )


def test_cli_finds_geometry_in_the_case_folder(chaos_sample: Path, tmp_path: Path) -> None:
    """Pointing at the CHAOS case folder itself: Ground and DICOM_anon are found there."""
    _, submission, _ = paths(chaos_sample)
    case = chaos_sample / "Train_Sets" / "CT" / "1"
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["evaluate", str(case), str(submission), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert printed(json.loads(out.read_text())["liver"]) == PUBLISHED
