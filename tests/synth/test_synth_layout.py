"""The written tree follows the CHAOS training-set layout and file naming exactly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from PIL import Image

from organseg.organs import SUBMISSION_GREY
from organseg.synth import default_slices

MR_NAME = re.compile(r"^IMG-(\d{4})-(\d{5})\.(dcm|png)$")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _parse(names: list[str]) -> tuple[set[int], list[int]]:
    matches = [MR_NAME.match(n) for n in names]
    assert all(matches), names
    return {int(m.group(1)) for m in matches}, [int(m.group(2)) for m in matches]


def test_top_level_holds_only_ct_and_mr_case_folders(synth_root: Path) -> None:
    train = synth_root / "Train_Sets"
    assert sorted(p.name for p in train.iterdir() if not p.name.startswith(".")) == ["CT", "MR"]
    assert _names(train / "CT") == ["1", "2"]
    assert _names(train / "MR") == ["1", "2"]
    assert _names(train / "CT" / "1") == ["DICOM_anon", "Ground"]
    assert _names(train / "MR" / "1") == ["T1DUAL", "T2SPIR"]
    assert _names(train / "MR" / "1" / "T1DUAL") == ["DICOM_anon", "Ground"]
    assert _names(train / "MR" / "1" / "T1DUAL" / "DICOM_anon") == ["InPhase", "OutPhase"]
    assert _names(train / "MR" / "1" / "T2SPIR") == ["DICOM_anon", "Ground"]


def test_ct_names_are_chaos_names(synth_root: Path, synth_size: int) -> None:
    n = default_slices("CT", synth_size)
    for case in ("1", "2"):
        folder = synth_root / "Train_Sets" / "CT" / case
        assert _names(folder / "DICOM_anon") == [f"i{k:04d},0000b.dcm" for k in range(n)]
        assert _names(folder / "Ground") == [f"liver_GT_{k:03d}.png" for k in range(n)]


def test_mr_names_follow_series_and_interleaved_echo_numbering(
    synth_root: Path, synth_size: int
) -> None:
    n = default_slices("MR", synth_size)
    for case in ("1", "2"):
        t1 = synth_root / "Train_Sets" / "MR" / case / "T1DUAL"
        in_names = _names(t1 / "DICOM_anon" / "InPhase")
        out_names = _names(t1 / "DICOM_anon" / "OutPhase")
        in_series, in_numbers = _parse(in_names)
        out_series, out_numbers = _parse(out_names)
        assert in_series == out_series
        assert len(in_series) == 1
        assert in_numbers == [2 * k + 2 for k in range(n)]  # in-phase: even instances
        assert out_numbers == [2 * k + 1 for k in range(n)]  # opposed-phase: odd instances
        assert _names(t1 / "Ground") == [name.replace(".dcm", ".png") for name in in_names]

        t2 = synth_root / "Train_Sets" / "MR" / case / "T2SPIR"
        t2_names = _names(t2 / "DICOM_anon")
        t2_series, t2_numbers = _parse(t2_names)
        assert len(t2_series) == 1
        assert t2_series != in_series
        assert t2_numbers == list(range(1, n + 1))
        assert _names(t2 / "Ground") == [name.replace(".dcm", ".png") for name in t2_names]


def test_instance_numbers_match_file_names(synth_root: Path) -> None:
    for path in (synth_root / "Train_Sets" / "MR").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series, number = MR_NAME.match(path.name).groups()[:2]  # type: ignore[union-attr]
        assert int(ds.SeriesNumber) == int(series)
        assert int(ds.InstanceNumber) == int(number)


def test_ct_masks_are_one_bit_liver_masks(synth_root: Path, synth_size: int) -> None:
    for case in ("1", "2"):
        ground = synth_root / "Train_Sets" / "CT" / case / "Ground"
        masks = sorted(ground.iterdir())
        assert len(masks) == len(list((ground.parent / "DICOM_anon").iterdir()))
        assert {Image.open(p).mode for p in masks} == {"1"}  # as the CHAOS CT ground truth
        levels = set()
        for path in masks:
            grey = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
            assert grey.shape == (synth_size, synth_size)
            levels |= set(np.unique(grey).tolist())
        assert levels == {0, 255}


def test_mr_masks_use_chaos_grey_levels(synth_root: Path) -> None:
    expected = {0, *SUBMISSION_GREY.values()}
    for ground in (synth_root / "Train_Sets" / "MR").rglob("Ground"):
        masks = sorted(ground.iterdir())
        dicom = ground.parent / "DICOM_anon"
        n_slices = len(
            list((dicom / "InPhase" if (dicom / "InPhase").is_dir() else dicom).iterdir())
        )
        assert len(masks) == n_slices
        levels = set()
        for path in masks:
            image = Image.open(path)
            assert image.mode == "L"
            levels |= set(np.unique(np.asarray(image)).tolist())
        assert levels == expected, ground  # all four organs, and nothing but the CHAOS values


def test_ct_layout_matches_the_real_chaos_case(synth_root: Path, chaos_ct_case: Path) -> None:
    """Same folder names, file-name pattern, mask format and core tags as the real CT case."""
    ours = synth_root / "Train_Sets" / "CT" / "1"
    assert _names(ours) == _names(chaos_ct_case)
    real_dicom = _names(chaos_ct_case / "DICOM_anon")
    real_ground = _names(chaos_ct_case / "Ground")
    assert _names(ours / "DICOM_anon") == real_dicom[: len(_names(ours / "DICOM_anon"))]
    assert _names(ours / "Ground") == real_ground[: len(_names(ours / "Ground"))]
    assert (
        Image.open(ours / "Ground" / real_ground[0]).mode
        == Image.open(chaos_ct_case / "Ground" / real_ground[0]).mode
    )
    real = pydicom.dcmread(chaos_ct_case / "DICOM_anon" / real_dicom[0], stop_before_pixels=True)
    mine = pydicom.dcmread(ours / "DICOM_anon" / real_dicom[0], stop_before_pixels=True)
    core = [
        "SOPClassUID",
        "Modality",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "RescaleIntercept",
        "RescaleSlope",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "PhotometricInterpretation",
    ]
    for keyword in core:
        assert keyword in real, keyword
        assert keyword in mine, keyword
    assert mine.SOPClassUID == real.SOPClassUID
    assert list(mine.ImageOrientationPatient) == list(real.ImageOrientationPatient)
    # both run head → feet in file order
    real_last = pydicom.dcmread(
        chaos_ct_case / "DICOM_anon" / real_dicom[-1], stop_before_pixels=True
    )
    mine_last = pydicom.dcmread(ours / "DICOM_anon" / _names(ours / "DICOM_anon")[-1])
    assert real.ImagePositionPatient[2] > real_last.ImagePositionPatient[2]
    assert mine.ImagePositionPatient[2] > mine_last.ImagePositionPatient[2]
