"""Every synthetic DICOM file is a valid, readable image with the tags a real scanner writes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.pixels import apply_rescale
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage


def _series_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in (root / "Train_Sets").rglob("*.dcm")})


def _read_folder(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


@pytest.fixture(scope="module")
def headers(synth_root: Path) -> dict[Path, list[pydicom.Dataset]]:
    return {folder: _read_folder(folder) for folder in _series_folders(synth_root)}


def test_series_folders(headers: dict[Path, list[pydicom.Dataset]]) -> None:
    kinds = sorted(f"{f.parent.name}/{f.name}" for f in headers)
    assert kinds.count("1/DICOM_anon") + kinds.count("2/DICOM_anon") == 2  # CT
    assert kinds.count("DICOM_anon/InPhase") == kinds.count("DICOM_anon/OutPhase") == 2
    assert kinds.count("T2SPIR/DICOM_anon") == 2


def test_file_meta_and_pixels(headers: dict[Path, list[pydicom.Dataset]], synth_size: int) -> None:
    for folder, datasets in headers.items():
        ct = "CT" in folder.parts
        for ds in datasets:
            meta = ds.file_meta
            assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID):
                assert uid.is_valid, uid
            assert ds.preamble == b"\x00" * 128
            assert ds.SOPClassUID == (CTImageStorage if ct else MRImageStorage)
            assert ds.Modality == ("CT" if ct else "MR")
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            assert ds.SamplesPerPixel == 1
            assert (ds.Rows, ds.Columns) == (synth_size, synth_size)
            assert ds.BitsAllocated == 16
            assert ds.HighBit == ds.BitsStored - 1
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert ds.PatientID
            assert ds.SeriesDescription
            assert float(ds.SliceThickness) > 0
            pixels = ds.pixel_array
            assert pixels.shape == (synth_size, synth_size)
            assert pixels.dtype == (np.int16 if ds.PixelRepresentation else np.uint16)
            assert int(ds.SmallestImagePixelValue) == int(pixels.min())
            assert int(ds.LargestImagePixelValue) == int(pixels.max())


def test_ct_rescale_gives_hounsfield_units(headers: dict[Path, list[pydicom.Dataset]]) -> None:
    representations = set()
    for folder, datasets in headers.items():
        if "CT" not in folder.parts:
            continue
        for ds in datasets:
            assert float(ds.RescaleIntercept) == -1024
            assert float(ds.RescaleSlope) == 1
            representations.add(int(ds.PixelRepresentation))
        hu = np.stack([apply_rescale(d.pixel_array, d) for d in datasets])
        assert -1030 <= float(np.percentile(hu, 1)) <= -950  # air around the patient
        assert float(hu.max()) > 400  # bone
    assert representations == {0, 1}  # unsigned and signed storage both occur


def test_slice_order_runs_head_to_feet(
    headers: dict[Path, list[pydicom.Dataset]], synth_size: int
) -> None:
    for folder, datasets in headers.items():
        ct = "CT" in folder.parts
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
        steps = -np.diff(z)
        assert np.all(steps > 0), f"{folder}: z must decrease with the file index"
        assert np.allclose(steps, steps[0], atol=1e-3)
        assert np.allclose(z, [float(ds.SliceLocation) for ds in datasets])
        xy = {tuple(float(v) for v in ds.ImagePositionPatient[:2]) for ds in datasets}
        assert len(xy) == 1
        spacing = {tuple(float(v) for v in ds.PixelSpacing) for ds in datasets}
        assert len(spacing) == 1
        ((row, col),) = spacing
        assert row == col
        if ct:
            assert 2.0 <= steps[0] <= 3.0
            assert 0.6 * 512 / synth_size <= row <= 0.82 * 512 / synth_size
        else:
            assert 5.5 <= steps[0] <= 9.0
            assert float(datasets[0].SpacingBetweenSlices) == pytest.approx(steps[0])
            assert 1.5 * 256 / synth_size <= row <= 1.9 * 256 / synth_size


def test_mr_sequence_tags(headers: dict[Path, list[pydicom.Dataset]]) -> None:
    for folder, datasets in headers.items():
        if "MR" not in folder.parts:
            continue
        ds = datasets[0]
        assert float(ds.MagneticFieldStrength) == 1.5
        assert {float(d.EchoTime) for d in datasets} == {float(ds.EchoTime)}
        te, tr = float(ds.EchoTime), float(ds.RepetitionTime)
        if folder.name == "InPhase":
            assert 4.4 <= te <= 4.6
            assert ds.SeriesDescription == "T1DUAL in-phase"
            assert ds.ScanningSequence == "GR"
        elif folder.name == "OutPhase":
            assert 2.2 <= te <= 2.3
            assert ds.SeriesDescription == "T1DUAL out-phase"
            assert ds.ScanningSequence == "GR"
        else:
            assert folder.parent.name == "T2SPIR"
            assert ds.SeriesDescription == "T2SPIR"
            assert 70 <= te <= 90
            assert tr >= 1000
            assert ds.ScanningSequence == "SE"
            assert "FS" in str(ds.ScanOptions)
        assert ds.SequenceName


def test_uids_unique_and_study_shared_per_case(headers: dict[Path, list[pydicom.Dataset]]) -> None:
    sop = [ds.SOPInstanceUID for datasets in headers.values() for ds in datasets]
    assert len(sop) == len(set(sop))
    series_uids = []
    studies: dict[tuple[str, str], set[str]] = defaultdict(set)
    patients: dict[tuple[str, str], set[str]] = defaultdict(set)
    for folder, datasets in headers.items():
        uids = {ds.SeriesInstanceUID for ds in datasets}
        assert len(uids) == 1, folder
        series_uids.append(uids.pop())
        parts = folder.parts
        train = parts.index("Train_Sets")
        case = (parts[train + 1], parts[train + 2])
        studies[case] |= {ds.StudyInstanceUID for ds in datasets}
        patients[case] |= {ds.PatientID for ds in datasets}
    assert len(series_uids) == len(set(series_uids))
    assert all(len(uids) == 1 for uids in studies.values())
    assert len({next(iter(u)) for u in studies.values()}) == len(studies) == 4
    assert all(len(ids) == 1 for ids in patients.values())
    assert len({next(iter(i)) for i in patients.values()}) == 4


def test_every_series_reads_with_simpleitk(synth_root: Path, synth_size: int) -> None:
    for folder in _series_folders(synth_root):
        reader = sitk.ImageSeriesReader()
        assert len(reader.GetGDCMSeriesIDs(str(folder))) == 1
        files = sorted(str(p) for p in folder.glob("*.dcm"))
        reader.SetFileNames(files)  # CHAOS rule: file-name order is slice order
        image = reader.Execute()
        assert image.GetSize() == (synth_size, synth_size, len(files))
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        second = pydicom.dcmread(files[1], stop_before_pixels=True)
        step = float(first.ImagePositionPatient[2]) - float(second.ImagePositionPatient[2])
        assert image.GetSpacing()[2] == pytest.approx(step, abs=1e-3)
        assert image.GetOrigin()[2] == pytest.approx(float(first.ImagePositionPatient[2]))
        assert image.GetDirection()[8] == pytest.approx(-1.0)  # index z runs towards the feet
        # SimpleITK applies the rescale: CT voxels are HU
        array = sitk.GetArrayFromImage(image)
        if "CT" in folder.parts:
            assert array.min() >= -1100
            assert np.median(array[:, :4, :4]) < -900
