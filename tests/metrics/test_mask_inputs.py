"""What `organseg evaluate` accepts as masks, how grey levels become organs, and its clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.cli import main
from organseg.errors import DataError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.metrics.inputs import load_pair


def write_pngs(folder: Path, grey: np.ndarray, pattern: str = "slice{:03d}.png") -> Path:
    folder.mkdir(parents=True)
    for z, plane in enumerate(grey):
        sitk.WriteImage(
            sitk.GetImageFromArray(plane.astype(np.uint8)), str(folder / pattern.format(z))
        )
    return folder


def write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> Path:
    sitk.WriteImage(Volume(array, geometry).to_sitk(), str(path))
    return path


def blob(shape=(5, 12, 14), value: int = 255) -> np.ndarray:
    grey = np.zeros(shape, np.uint8)
    grey[1:4, 3:9, 4:11] = value
    return grey


GEOMETRY = Geometry(spacing=(0.8, 0.8, 2.5), origin=(1.0, 2.0, 3.0))


def test_binary_masks_without_modality_are_liver(tmp_path: Path) -> None:
    """No header, no case folder, no --modality: 255 (CHAOS Ground) and 63 (submission) are liver."""
    ref = write_volume(tmp_path / "ref.nii.gz", blob(value=255), GEOMETRY)
    pred = write_pngs(tmp_path / "pred", blob(value=63))
    data = load_pair(ref, pred)
    assert data.modality is Modality.UNKNOWN
    assert data.geometry.isclose(GEOMETRY)
    np.testing.assert_array_equal(data.ref_labels, (blob() > 0).astype(np.uint8))
    np.testing.assert_array_equal(data.pred_labels, data.ref_labels)


def test_mr_grey_ranges_map_to_the_four_organs(tmp_path: Path) -> None:
    grey = np.zeros((3, 8, 8), np.uint8)
    for organ_grey, x in ((63, 0), (126, 2), (189, 4), (252, 6)):
        grey[:, 2:6, x : x + 2] = organ_grey
    ref = write_pngs(tmp_path / "ref", grey)
    pred = write_volume(tmp_path / "pred.mha", (grey // 63).astype(np.uint8), GEOMETRY)
    data = load_pair(ref, pred, modality="MR-T2SPIR")
    np.testing.assert_array_equal(data.ref_labels, data.pred_labels)
    assert set(np.unique(data.ref_labels)) == {0, 1, 2, 3, 4}
    assert data.geometry.isclose(GEOMETRY)


def test_ct_reads_every_non_zero_level_as_liver(tmp_path: Path) -> None:
    grey = blob()
    grey[2, 5, 5] = 126
    ref = write_pngs(tmp_path / "ref", grey)
    pred = write_volume(tmp_path / "pred.nii.gz", (blob() > 0).astype(np.uint8), GEOMETRY)
    with pytest.warns(UserWarning, match="liver"):
        data = load_pair(ref, pred, modality="CT")
    np.testing.assert_array_equal(data.ref_labels, data.pred_labels)


def test_unknown_grey_level_names_the_file(tmp_path: Path) -> None:
    grey = blob(value=63)
    grey[3, 0, 0] = 90  # not in any CHAOS MR range
    ref = write_pngs(tmp_path / "ref", grey)
    pred = write_volume(tmp_path / "pred.nii.gz", np.zeros(grey.shape, np.uint8), GEOMETRY)
    with pytest.raises(DataError, match=r"slice003\.png.*grey level 90"):
        load_pair(ref, pred, modality="MR-T1-in")


def test_missing_slice_names_both_series(tmp_path: Path) -> None:
    ref = write_pngs(tmp_path / "ref", blob())
    pred = write_pngs(tmp_path / "pred", blob()[:4])
    with pytest.raises(DataError, match=r"slice000\.png … slice004\.png\) has 5 slices.*has 4"):
        load_pair(ref, pred)


def test_in_plane_size_mismatch(tmp_path: Path) -> None:
    ref = write_pngs(tmp_path / "ref", blob())
    pred = write_pngs(tmp_path / "pred", blob(shape=(5, 12, 13)))
    with pytest.raises(DataError, match=r"14x12 pixels.*13x12"):
        load_pair(ref, pred)


def test_png_masks_alone_have_no_millimetres(tmp_path: Path) -> None:
    ref = write_pngs(tmp_path / "ref", blob())
    pred = write_pngs(tmp_path / "pred", blob())
    with pytest.raises(DataError, match="--dicom"):
        load_pair(ref, pred)


def test_volume_files_carry_their_geometry_and_must_agree(tmp_path: Path) -> None:
    labels = (blob() > 0).astype(np.uint8)
    ref = write_volume(tmp_path / "ref.nii.gz", labels, GEOMETRY)
    same = write_volume(tmp_path / "same.mha", labels, GEOMETRY)
    data = load_pair(ref, same)
    assert data.geometry.isclose(GEOMETRY)
    other = write_volume(tmp_path / "other.nii.gz", labels, Geometry(spacing=(1, 1, 1)))
    with pytest.raises(DataError, match=r"ref\.nii\.gz.*other\.nii\.gz.*differ"):
        load_pair(ref, other)


def test_non_label_volume_is_refused(tmp_path: Path) -> None:
    ref = write_volume(tmp_path / "ref.nii.gz", (blob() > 0).astype(np.uint8), GEOMETRY)
    soft = write_volume(tmp_path / "prob.nii.gz", blob().astype(np.float32) / 300.0, GEOMETRY)
    with pytest.raises(DataError, match=r"prob\.nii\.gz: non-integer"):
        load_pair(ref, soft)
    with pytest.raises(DataError, match="no such file or folder"):
        load_pair(ref, tmp_path / "absent")


def test_cli_prints_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = write_pngs(tmp_path / "ref", blob())
    pred = write_pngs(tmp_path / "pred", blob()[:4])
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(ref), str(pred)])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the console width
    assert "error:" in err
    assert "Traceback" not in err
    assert "has 4" in err


@pytest.mark.sample
def test_dicom_series_must_match_the_mask(chaos_sample: Path, tmp_path: Path) -> None:
    submission = tmp_path / "submission"
    shutil.copytree(chaos_sample / "sample-submission" / "CT" / "1", submission)
    (submission / "results078.png").unlink()
    dicom = chaos_sample / "Train_Sets" / "CT" / "1" / "DICOM_anon"
    with pytest.raises(DataError, match=r"results001\.png … results077\.png\) has 77 slices.*78"):
        load_pair(submission, submission, dicom=dicom)
    ground = chaos_sample / "Train_Sets" / "CT" / "1" / "Ground"
    with pytest.raises(DataError, match=r"liver_GT_000\.png … liver_GT_077\.png\) has 78.*has 77"):
        load_pair(ground, submission, dicom=dicom)


def test_mr_case_folder_brings_modality_and_geometry(synth_root: Path, tmp_path: Path) -> None:
    """A T1-DUAL case folder: MR grey ranges and the in-phase series' millimetres, found alone."""
    from organseg.io import read_dicom_geometry
    from organseg.io.png import read_mask_series, write_png_series

    case = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL"
    labels = read_mask_series(case / "Ground", "MR-T1-in").array
    pred = tmp_path / "pred"
    write_png_series(labels, pred, "MR-T1-in")
    in_phase, _, _ = read_dicom_geometry(case / "DICOM_anon" / "InPhase", order="filename")

    data = load_pair(case, pred)
    assert data.modality is Modality.MR_T1_IN
    assert data.geometry.isclose(in_phase)
    np.testing.assert_array_equal(data.pred_labels, labels)
    assert set(np.unique(data.ref_labels)) == {0, 1, 2, 3, 4}

    # --dicom may name the case's DICOM_anon folder; the in-phase series is used.
    via_dicom = load_pair(case / "Ground", pred, dicom=case / "DICOM_anon")
    assert via_dicom.geometry.isclose(in_phase)
    assert via_dicom.modality.is_mr
