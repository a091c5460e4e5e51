"""DICOM-SEG export: segments, per-frame source references and pixels survive a read-back."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from organseg import __version__
from organseg.errors import DataError, DataWarning
from organseg.io import discover_cases, load_case
from organseg.io.dicomseg import write_dicom_seg
from organseg.io.outputs import write_labels
from organseg.io.volume import Volume
from organseg.organs import LABEL_NAMES, ORGAN_LABELS

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: SNOMED CT codes the export must use (property type, laterality modifier).
SNOMED = {
    "liver": ("10200004", None),
    "spleen": ("78961009", None),
    "right_kidney": ("64033007", "24028007"),
    "left_kidney": ("64033007", "7771000"),
}


def source_files(folder: Path) -> list[Path]:
    """The series' files in name order (zero-padded names here, so lexical order is CHAOS order)."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def case(root: Path, case_id: str):
    ref = next(r for r in discover_cases(root) if r.case_id == case_id)
    return ref, load_case(ref)


def check_round_trip(
    seg_path: Path, labels: np.ndarray, folder: Path, files: list[Path] | None = None
) -> hd.seg.Segmentation:
    """Every frame points at the right file (``files[z]`` for label slice z) and position; pixels
    equal the label slices."""
    files = source_files(folder) if files is None else files
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    index_of = {str(ds.SOPInstanceUID): z for z, ds in enumerate(sources)}
    raw = pydicom.dcmread(seg_path)
    assert raw.SOPClassUID == SEG_STORAGE
    assert raw.Modality == "SEG"
    assert raw.SegmentationType == "BINARY"
    assert raw.StudyInstanceUID == sources[0].StudyInstanceUID
    assert raw.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    organs = [
        LABEL_NAMES[int(v)] for v in np.unique(labels) if v != 0
    ]  # label order = segment order
    segment_of = {o: n for n, o in enumerate(organs, start=1)}
    pixels = raw.pixel_array.reshape(int(raw.NumberOfFrames), raw.Rows, raw.Columns)
    nonempty = {
        (z, o) for o in organs for z in np.flatnonzero((labels == ORGAN_LABELS[o]).any((1, 2)))
    }
    shared = raw.SharedFunctionalGroupsSequence[0]  # one segment: its id may be shared
    seen = set()
    for frame, item in zip(pixels, raw.PerFrameFunctionalGroupsSequence, strict=True):
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = index_of[str(uid)]
        ident = item.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        number = int(ident[0].ReferencedSegmentNumber)
        organ = organs[number - 1]
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx([float(v) for v in sources[z].ImagePositionPatient])
        np.testing.assert_array_equal(frame.astype(bool), labels[z] == ORGAN_LABELS[organ])
        seen.add((int(z), organ))
    assert seen == {(int(z), o) for z, o in nonempty}  # empty frames omitted, none missing

    seg = hd.seg.segread(seg_path)
    stacked = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in sources],
        segment_numbers=[segment_of[o] for o in organs],
    )
    expected = np.stack([labels == ORGAN_LABELS[o] for o in organs], axis=-1)
    np.testing.assert_array_equal(stacked.astype(bool), expected)
    return seg


def check_segments(seg: hd.seg.Segmentation, organs: list[str]) -> None:
    assert seg.number_of_segments == len(organs)
    for number, organ in enumerate(organs, start=1):
        item = seg.get_segment_description(number)
        assert item.SegmentLabel == organ.replace("_", " ").capitalize()
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "91723000")
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        code, laterality = SNOMED[organ]
        assert (prop.CodingSchemeDesignator, prop.CodeValue) == ("SCT", code)
        modifiers = prop.get("SegmentedPropertyTypeModifierCodeSequence", [])
        assert [m.CodeValue for m in modifiers] == ([laterality] if laterality else [])
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "organseg"
        assert algorithm.AlgorithmVersion == __version__
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # AI
    assert seg.Manufacturer == "organseg"
    assert seg.SoftwareVersions == __version__


def test_synthetic_ct(synth_root: Path, tmp_path: Path) -> None:
    ref, ct = case(synth_root, "CT/1")
    out = write_dicom_seg(ct.label, ref.image_dir, tmp_path / "ct.dcm")
    assert out == tmp_path / "ct.dcm"
    assert [p.name for p in tmp_path.iterdir()] == ["ct.dcm"]  # no temporary file left behind
    seg = check_round_trip(out, ct.label.array, ref.image_dir)
    check_segments(seg, ["liver"])


def test_synthetic_mr_all_organs(synth_root: Path, tmp_path: Path) -> None:
    ref, mr = case(synth_root, "MR/1/T2SPIR")
    assert set(np.unique(mr.label.array)) == {0, 1, 2, 3, 4}
    seg = check_round_trip(
        write_dicom_seg(mr.label, ref.image_dir, tmp_path / "mr.dcm"), mr.label.array, ref.image_dir
    )
    check_segments(seg, ["liver", "right_kidney", "left_kidney", "spleen"])
    assert seg.PatientID == pydicom.dcmread(next(ref.image_dir.iterdir())).PatientID


def test_segment_numbers_follow_present_organs(synth_root: Path, tmp_path: Path) -> None:
    """Only spleen and left kidney present: two segments, numbered 1 and 2, not by label id."""
    ref, mr = case(synth_root, "MR/2/T2SPIR")
    labels = np.where(np.isin(mr.label.array, [3, 4]), mr.label.array, 0).astype(np.uint8)
    out = write_dicom_seg(mr.label.with_array(labels), ref.image_dir, tmp_path / "two.dcm")
    seg = check_round_trip(out, labels, ref.image_dir)
    check_segments(seg, ["left_kidney", "spleen"])


def test_file_name_order_not_position_or_lexical(synth_root: Path, tmp_path: Path) -> None:
    """Label slice z belongs to the z-th file in natural name order (slice2 before slice10)."""
    ref, ct = case(synth_root, "CT/2")
    folder = tmp_path / "series"
    folder.mkdir()
    originals = source_files(ref.image_dir)
    order = np.random.default_rng(0).permutation(len(originals))  # shuffle positions vs names
    for new_index, old in enumerate(order):
        shutil.copy(originals[old], folder / f"slice{new_index + 1}.dcm")
    n = len(originals)
    labels = np.zeros(ct.label.shape, dtype=np.uint8)
    for z in range(n):  # slice z: a bar of z + 1 pixels, unique per slice
        labels[z, 5, 3 : 4 + z] = 1
    out = write_dicom_seg(Volume(labels), folder, tmp_path / "order.dcm")
    expected_files = [folder / f"slice{z + 1}.dcm" for z in range(n)]
    check_round_trip(out, labels, folder, expected_files)


def test_real_chaos_case(chaos_ct_case: Path, tmp_path: Path) -> None:
    """The real CT (empty PatientID, MATLAB-written headers) with its ground truth as labels."""
    ct = load_case(discover_cases(chaos_ct_case)[0])
    folder = chaos_ct_case / "DICOM_anon"
    # A case folder stands for its DICOM_anon series.
    out = write_labels(ct.label, tmp_path / "liver", "dicom-seg", source_dicom=chaos_ct_case)[0]
    assert out.name == "liver.dcm"
    seg = check_round_trip(out, ct.label.array, folder)
    check_segments(seg, ["liver"])
    liver_slices = int(ct.label.array.any(axis=(1, 2)).sum())
    assert seg.NumberOfFrames == liver_slices
    assert (seg.Rows, seg.Columns) == (512, 512)
    assert seg.PatientID == ""


def test_missing_type2_attributes_are_filled(synth_root: Path, tmp_path: Path) -> None:
    ref, ct = case(synth_root, "CT/1")
    folder = tmp_path / "series"
    folder.mkdir()
    for path in source_files(ref.image_dir):
        ds = pydicom.dcmread(path)
        for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber", "StudyID"):
            delattr(ds, keyword)
        ds.save_as(folder / path.name)
    with pytest.warns(DataWarning, match="PatientID"):
        out = write_dicom_seg(ct.label, folder, tmp_path / "seg.dcm")
    seg = check_round_trip(out, ct.label.array, folder)
    assert seg.PatientID == ""
    assert seg.AccessionNumber == ""


def test_empty_prediction_still_writes_a_valid_object(synth_root: Path, tmp_path: Path) -> None:
    ref, ct = case(synth_root, "CT/1")
    empty = ct.label.with_array(np.zeros_like(ct.label.array))
    empty.meta["organs"] = "liver,spleen"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = write_dicom_seg(empty, ref.image_dir, tmp_path / "empty.dcm")
    seg = hd.seg.segread(out)
    assert seg.number_of_segments == 2
    assert not seg.pixel_array.any()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a[:-1], "source series has 12 slices"),
        (lambda a: a[:, :-2], "labels have 12 slices of 64x62"),
        (lambda a: np.where(a > 0, 7, 0).astype(np.uint8), r"values \[7\]"),
    ],
)
def test_mismatched_labels_are_refused(synth_root: Path, tmp_path: Path, change, message) -> None:
    ref, ct = case(synth_root, "CT/1")
    assert ct.label.shape == (12, 64, 64)
    labels = Volume(change(ct.label.array.copy()))
    with pytest.raises(DataError, match=message) as info:
        write_dicom_seg(labels, ref.image_dir, tmp_path / "bad.dcm")
    if "values" not in message:
        assert str(ref.image_dir) in str(info.value)
    assert not (tmp_path / "bad.dcm").exists()


def test_source_without_frame_of_reference_is_refused(synth_root: Path, tmp_path: Path) -> None:
    ref, ct = case(synth_root, "CT/1")
    folder = tmp_path / "series"
    folder.mkdir()
    for path in source_files(ref.image_dir):
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(folder / path.name)
    with pytest.raises(DataError, match="FrameOfReferenceUID"):
        write_dicom_seg(ct.label, folder, tmp_path / "seg.dcm")


def test_missing_source_folder(tmp_path: Path) -> None:
    labels = Volume(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="nowhere"):
        write_dicom_seg(labels, tmp_path / "nowhere", tmp_path / "seg.dcm")
    with pytest.raises(DataError, match="needs the source DICOM"):
        write_labels(labels, tmp_path / "seg.dcm")
