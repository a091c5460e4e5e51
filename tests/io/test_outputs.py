"""Every format `organseg predict` writes is read back by evaluation voxel for voxel on the reference
grid; output names are planned (and refused) before any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from organseg.errors import DataError
from organseg.io import discover_cases, load_case
from organseg.io.outputs import check_free, layout_path, plan_outputs, write_labels
from organseg.metrics.inputs import load_pair
from organseg.organs import ORGAN_LABELS

FORMATS = ["pred.nii.gz", "pred.mha", "pred.nrrd", "pred", "pred.dcm"]


def changed_labels(synth_root: Path, case_id: str):
    """The case's reference labels with the first third of the slices cleared (so a flipped or
    shifted read shows) and, in MR, the spleen removed; plus where the case lies."""
    ref = next(r for r in discover_cases(synth_root) if r.case_id == case_id)
    case = load_case(ref)
    labels = case.label.array.copy()
    labels[: labels.shape[0] // 3] = 0
    labels[labels == ORGAN_LABELS["spleen"]] = 0
    assert labels.any()
    return ref, case.label.with_array(labels)


@pytest.mark.parametrize(
    ("case_id", "name"),
    [("CT/1", name) for name in FORMATS] + [("MR/1/T2SPIR", "pred"), ("MR/1/T2SPIR", "pred.dcm")],
)
def test_written_labels_read_back_on_the_reference_grid(
    case_id: str, name: str, synth_root: Path, tmp_path: Path
) -> None:
    ref, labels = changed_labels(synth_root, case_id)
    written = write_labels(labels, tmp_path / name, source_dicom=ref.image_dir)
    out = tmp_path / name if not name.endswith(".dcm") else written[0]
    data = load_pair(ref.mask_dir, out)  # `organseg evaluate Ground seg.dcm`, as a user types it
    np.testing.assert_array_equal(data.pred_labels, labels.array)
    assert data.modality is ref.modality


def test_dicom_seg_of_another_series_is_refused(synth_root: Path, tmp_path: Path) -> None:
    ref, labels = changed_labels(synth_root, "CT/1")
    seg = write_labels(labels, tmp_path / "ct1.dcm", source_dicom=ref.image_dir)[0]
    other = synth_root / "Train_Sets" / "CT" / "2"
    with pytest.raises(DataError, match="references another series"):
        load_pair(other, seg)
    bare = Path(shutil.copytree(ref.mask_dir, tmp_path / "masks"))
    with pytest.raises(DataError, match="pass --dicom"):
        load_pair(bare, seg)  # a bare PNG folder has no DICOM series to place it on
    np.testing.assert_array_equal(
        load_pair(bare, seg, dicom=ref.image_dir).pred_labels, labels.array
    )


def test_plans_for_one_and_several_series(tmp_path: Path) -> None:
    [one] = plan_outputs(tmp_path / "seg", "nifti", ["CT/1"])
    assert one.labels == tmp_path / "seg.nii.gz"
    targets = plan_outputs(
        tmp_path / "out", "auto", ["CT/1", "MR/2/T2SPIR", "MR/2/T1DUAL"], tmp_path / "ov"
    )
    assert [t.labels for t in targets] == [
        tmp_path / "out" / "CT" / "1",
        tmp_path / "out" / "MR" / "2" / "T2SPIR",
        tmp_path / "out" / "MR" / "2" / "T1DUAL",
    ]
    assert targets[1].overlay == tmp_path / "ov" / "MR" / "2" / "T2SPIR"
    assert layout_path("Test/CT/3", both_splits=False) == "CT/3"
    assert layout_path("Test/CT/3", both_splits=True) == "Test_Sets/CT/3"
    with pytest.raises(DataError, match=r"a \.dcm name cannot hold"):
        plan_outputs(tmp_path / "x.dcm", "auto", ["CT/1", "CT/2"])
    with pytest.raises(DataError, match="one file per slice"):
        plan_outputs(tmp_path / "x.png", "auto", ["CT/1"])


def test_check_free(tmp_path: Path) -> None:
    (tmp_path / "f.nii.gz").write_text("x")
    (tmp_path / "empty").mkdir()
    check_free([(tmp_path / "empty", True), (tmp_path / "new.json", False)], overwrite=False)
    with pytest.raises(DataError, match=r"f\.nii\.gz: already exists"):
        check_free([(tmp_path / "f.nii.gz", False)], overwrite=False)
    check_free([(tmp_path / "f.nii.gz", False)], overwrite=True)
    with pytest.raises(DataError, match="is a folder"):
        check_free([(tmp_path / "empty", False)], overwrite=True)
