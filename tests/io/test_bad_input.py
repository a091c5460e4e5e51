"""Bad input gets an error or warning naming the file; nothing half-read comes back silently."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.errors import DataError, DataWarning
from organseg.io import discover_cases, load_case, read_any, read_dicom_series, read_png_series
from organseg.io.png import grey_to_labels


@pytest.fixture
def ct_case(synth_root: Path, tmp_path: Path) -> Path:
    case = tmp_path / "Train_Sets" / "CT" / "1"
    shutil.copytree(synth_root / "Train_Sets" / "CT" / "1", case)
    return case


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: no DICOM files"):
        read_dicom_series(tmp_path)


def test_non_dicom_file_is_skipped_with_a_warning(ct_case: Path) -> None:
    n = len(list((ct_case / "DICOM_anon").iterdir()))
    (ct_case / "DICOM_anon" / "notes.txt").write_text("not an image")
    with pytest.warns(DataWarning, match="notes.txt"):
        volume = read_dicom_series(ct_case / "DICOM_anon")
    assert volume.shape[0] == n


def test_truncated_dicom_names_the_file(ct_case: Path) -> None:
    victim = sorted((ct_case / "DICOM_anon").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=victim.name):
        read_dicom_series(ct_case / "DICOM_anon")


def test_mask_count_mismatch(ct_case: Path) -> None:
    sorted((ct_case / "Ground").iterdir())[-1].unlink()
    (ref,) = discover_cases(ct_case)
    with pytest.raises(DataError, match="mask slices"):
        load_case(ref)


def test_mask_size_mismatch_names_the_file(ct_case: Path) -> None:
    pngs = sorted((ct_case / "Ground").iterdir())
    for png in pngs:  # every mask a different size than the image
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 10), np.uint8)), str(png))
    (ref,) = discover_cases(ct_case)
    with pytest.raises(DataError, match=pngs[0].name):
        load_case(ref)


def test_png_of_other_size_within_series(ct_case: Path) -> None:
    odd = sorted((ct_case / "Ground").iterdir())[2]
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 10), np.uint8)), str(odd))
    with pytest.raises(DataError, match=odd.name):
        read_png_series(ct_case / "Ground")


def test_unexpected_mr_grey_level_names_the_file(tmp_path: Path) -> None:
    for i, level in enumerate([0, 63, 100]):
        sitk.WriteImage(
            sitk.GetImageFromArray(np.full((4, 4), level, np.uint8)), str(tmp_path / f"m{i}.png")
        )
    grey, files = read_png_series(tmp_path)
    with pytest.raises(DataError, match=r"m2\.png: unexpected mask grey level 100"):
        grey_to_labels(grey, "MR-T2SPIR", files)


def test_ct_mask_with_extra_levels_warns(tmp_path: Path) -> None:
    for i, level in enumerate([0, 255, 63]):
        sitk.WriteImage(
            sitk.GetImageFromArray(np.full((4, 4), level, np.uint8)), str(tmp_path / f"m{i}.png")
        )
    grey, files = read_png_series(tmp_path)
    with pytest.warns(DataWarning, match=r"m2\.png"):
        labels = grey_to_labels(grey, "CT", files)
    assert labels.tolist() == (grey > 0).astype(np.uint8).tolist()


def test_two_series_in_one_folder(synth_root: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon", mixed)
    for f in (synth_root / "Train_Sets" / "CT" / "2" / "DICOM_anon").iterdir():
        shutil.copy(f, mixed / f"other-{f.name}")
    with pytest.raises(DataError, match="2 DICOM series"):
        read_dicom_series(mixed)


def test_corrupt_volume_file(tmp_path: Path) -> None:
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"scan\.nii\.gz"):
        read_any(bad)


def test_missing_path() -> None:
    with pytest.raises(DataError, match="no such file"):
        read_any(Path("/definitely/not/here"))
