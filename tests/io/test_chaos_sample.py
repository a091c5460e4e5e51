"""The data layer on the real CHAOS CT case (78 slices, liver ground truth)."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from organseg.io import (
    discover_cases,
    iter_cases,
    load_case,
    read_dicom_geometry,
    read_dicom_series,
)
from organseg.io.volume import Modality

pytestmark = pytest.mark.sample


def test_reader_shape_spacing_and_geometry(chaos_ct_case: Path) -> None:
    volume = read_dicom_series(chaos_ct_case / "DICOM_anon", order="filename")
    assert volume.shape == (78, 512, 512)
    assert volume.spacing == pytest.approx((0.7265625, 0.7265625, 2.0))
    # file-name order runs from z = 1690.5 down to 1536.5: origin at the first file, z axis pointing down
    assert volume.origin == pytest.approx((-185.0, -98.0, 1690.5))
    np.testing.assert_allclose(volume.geometry.direction_matrix[:, 2], [0, 0, -1])
    last_world = volume.geometry.affine() @ np.array([0, 0, 77, 1.0])
    assert last_world[2] == pytest.approx(1536.5)
    assert volume.modality is Modality.CT
    assert volume.meta["modality_reason"] == "DICOM Modality=CT"


def test_geometry_order_runs_up_the_normal(chaos_ct_case: Path) -> None:
    """The default order: by position along the slice normal (feet to head here), z step from positions."""
    volume = read_dicom_series(chaos_ct_case / "DICOM_anon")
    by_name = read_dicom_series(chaos_ct_case / "DICOM_anon", order="filename")
    assert volume.meta["slice_order"] == "geometry"
    assert volume.spacing == pytest.approx((0.7265625, 0.7265625, 2.0))
    assert volume.origin == pytest.approx((-185.0, -98.0, 1536.5))
    np.testing.assert_allclose(volume.geometry.direction_matrix, np.eye(3))
    np.testing.assert_array_equal(volume.array, by_name.array[::-1])


@pytest.mark.parametrize("order", ["filename", "geometry"])
def test_slices_follow_the_chosen_order(chaos_ct_case: Path, order: str) -> None:
    volume = read_dicom_series(chaos_ct_case / "DICOM_anon", order=order)
    files = sorted((chaos_ct_case / "DICOM_anon").glob("*.dcm"))
    if order == "geometry":
        files = files[::-1]  # file names run head to feet
    for z in (0, 1, 40, 77):
        ds = pydicom.dcmread(files[z])
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume.array[z], hu.astype(np.int16))


@pytest.mark.parametrize("order", ["filename", "geometry"])
def test_header_only_geometry_matches(chaos_ct_case: Path, order: str) -> None:
    geometry, modality, meta = read_dicom_geometry(chaos_ct_case / "DICOM_anon", order=order)
    assert geometry == read_dicom_series(chaos_ct_case / "DICOM_anon", order=order).geometry
    assert modality is Modality.CT
    assert meta["slice_count"] == "78"


def test_liver_mask_aligned_slice_by_slice(chaos_sample: Path, chaos_ct_case: Path) -> None:
    (case,) = list(iter_cases(chaos_sample))
    case_id, modality, image, label = case
    assert (case_id, modality) == ("CT/1", Modality.CT)
    assert label is not None
    assert label.shape == image.shape
    assert label.geometry == image.geometry
    pngs = sorted((chaos_ct_case / "Ground").glob("*.png"))
    for z in (0, 7, 40, 77):
        np.testing.assert_array_equal(
            label.array[z], sitk.GetArrayFromImage(sitk.ReadImage(str(pngs[z]))) > 0
        )
    # the mask sits on liver tissue: nearly all of it in the contrast-enhanced liver HU range
    inside = image.array[label.array == 1]
    assert ((inside > 80) & (inside < 220)).mean() > 0.9


def test_discovery_from_any_level(chaos_sample: Path) -> None:
    ids = {r.case_id for r in discover_cases(chaos_sample)}
    assert ids == {"CT/1"}
    for sub in ("Train_Sets", "Train_Sets/CT", "Train_Sets/CT/1"):
        (ref,) = discover_cases(chaos_sample / sub)
        assert ref.case_id == "CT/1"
        assert ref.mask_dir is not None
    case = load_case(ref, with_label=False)
    assert case.label is None
