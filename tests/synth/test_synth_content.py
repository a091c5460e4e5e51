"""Images and masks agree: organs sit where anatomy puts them, with plausible intensities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_rescale
from scipy import ndimage

from organseg.organs import SUBMISSION_GREY

GREY_TO_ORGAN = {grey: organ for organ, grey in SUBMISSION_GREY.items()}
IN_PLANE = np.zeros((1, 3, 3), dtype=bool)
IN_PLANE[0, 1, :] = IN_PLANE[0, :, 1] = True


def _volume(folder: Path) -> np.ndarray:
    """Real-world values ``[z, y, x]`` in file-name order."""
    slices = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        slices.append(apply_rescale(ds.pixel_array, ds).astype(np.float32))
    return np.stack(slices)


def _masks(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("L")) for p in sorted(folder.glob("*.png"))])


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask without its in-plane border, away from partial-volume edges."""
    return ndimage.binary_erosion(mask, IN_PLANE)


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)  # (slice, row, column)


def _case_folders(root: Path, kind: str) -> list[Path]:
    return sorted((root / "Train_Sets" / kind).iterdir())


def test_ct_liver_mask_covers_liver_intensities(synth_root: Path) -> None:
    for case in _case_folders(synth_root, "CT"):
        hu = _volume(case / "DICOM_anon")
        liver = _masks(case / "Ground") > 0
        inside = hu[_interior(liver)]
        assert 45 <= float(np.median(inside)) <= 85, case  # liver 50–70 HU plus enhanced vessels
        ring = ndimage.binary_dilation(liver, IN_PLANE, iterations=2) & ~liver
        # the mask edge is a real intensity edge: the surroundings are mostly not liver-like
        assert abs(float(np.median(hu[ring])) - float(np.median(inside))) > 20


def test_ct_organs_overlap_in_intensity(synth_root: Path) -> None:
    """The liver is not separable by a threshold: other soft tissue shares its HU range."""
    for case in _case_folders(synth_root, "CT"):
        hu = _volume(case / "DICOM_anon")
        liver = _masks(case / "Ground") > 0
        lo, hi = np.percentile(hu[_interior(liver)], [10, 90])
        in_range = (hu > lo) & (hu < hi)
        outside = in_range & ~ndimage.binary_dilation(liver, IN_PLANE, iterations=2)
        assert outside.sum() > 0.1 * in_range.sum()


def test_anatomy_sides_and_levels(synth_root: Path) -> None:
    for case in _case_folders(synth_root, "MR"):
        for sequence in ("T1DUAL", "T2SPIR"):
            grey = _masks(case / sequence / "Ground")
            organs = {GREY_TO_ORGAN[g]: grey == g for g in np.unique(grey) if g}
            assert set(organs) == set(SUBMISSION_GREY)
            c = {name: _centroid(mask) for name, mask in organs.items()}
            mid = grey.shape[2] / 2
            # radiological convention: patient's right on the image left (low column index)
            assert c["liver"][2] < mid < c["spleen"][2]
            assert c["right_kidney"][2] < mid < c["left_kidney"][2]
            # kidneys posterior (high row index), the liver above the kidneys (lower slice index)
            assert c["right_kidney"][1] > mid
            assert c["left_kidney"][1] > mid
            assert c["liver"][0] < c["right_kidney"][0]
            assert c["spleen"][0] < c["left_kidney"][0]


def test_mr_contrasts(synth_root: Path) -> None:
    for case in _case_folders(synth_root, "MR"):
        t1_grey = _masks(case / "T1DUAL" / "Ground")
        in_phase = _volume(case / "T1DUAL" / "DICOM_anon" / "InPhase")
        out_phase = _volume(case / "T1DUAL" / "DICOM_anon" / "OutPhase")
        liver = t1_grey == SUBMISSION_GREY["liver"]
        inner = _interior(liver)
        edge = ndimage.binary_dilation(liver, IN_PLANE) & ~inner
        ratio_inner = out_phase[inner].mean() / in_phase[inner].mean()
        ratio_edge = out_phase[edge].mean() / in_phase[edge].mean()
        assert ratio_edge < ratio_inner - 0.1  # India-ink cancellation at fat–water boundaries

        t2 = _volume(case / "T2SPIR" / "DICOM_anon")
        t2_grey = _masks(case / "T2SPIR" / "Ground")
        means = {
            organ: float(t2[_interior(t2_grey == grey)].mean())
            for organ, grey in SUBMISSION_GREY.items()
        }
        assert means["spleen"] > means["liver"]
        assert means["right_kidney"] > means["liver"]
        assert means["left_kidney"] > means["liver"]


def test_t1_echoes_share_geometry_and_ground_truth(synth_root: Path) -> None:
    case = _case_folders(synth_root, "MR")[0]
    in_files = sorted((case / "T1DUAL" / "DICOM_anon" / "InPhase").glob("*.dcm"))
    out_files = sorted((case / "T1DUAL" / "DICOM_anon" / "OutPhase").glob("*.dcm"))
    for a, b in zip(in_files, out_files, strict=True):
        da = pydicom.dcmread(a, stop_before_pixels=True)
        db = pydicom.dcmread(b, stop_before_pixels=True)
        assert da.ImagePositionPatient == db.ImagePositionPatient
        assert float(da.EchoTime) != float(db.EchoTime)
        assert da.SeriesInstanceUID != db.SeriesInstanceUID
        assert da.StudyInstanceUID == db.StudyInstanceUID
        assert da.FrameOfReferenceUID == db.FrameOfReferenceUID


@pytest.mark.parametrize("kind", ["CT", "MR"])
def test_cases_differ(synth_root: Path, kind: str) -> None:
    """Case 1 and case 2 are different patients, not copies with new UIDs."""
    cases = _case_folders(synth_root, kind)
    sub = "Ground" if kind == "CT" else "T1DUAL/Ground"
    a, b = (_masks(c / sub) > 0 for c in cases)
    assert a.shape == b.shape
    assert (a & b).sum() / (a | b).sum() < 0.9
