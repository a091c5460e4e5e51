"""DICOM-SEG for any label set: one coded segment per label, the CHAOS segments unchanged, read back
to the label map, and valid by dciodvfy (dicom3tools) with nine segments."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from organseg import __version__
from organseg.errors import DataError
from organseg.io import discover_cases, load_case
from organseg.io.dicomseg import read_dicom_seg, segment_description, write_dicom_seg
from organseg.labels import PRIVATE_SCHEME, Code, LabelSet, StructureCode, chaos_label_set
from organseg.organs import ORGAN_COLOURS, ORGAN_LABELS
from organseg.synth.abdomen import abdomen_label_set, make_abdomen_phantom


def chaos_description_as_before(number: int, organ: str):
    """The CHAOS segment description exactly as organseg wrote it before label sets existed."""
    from pydicom.sr.codedict import codes

    types = {"liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen}
    laterality = {"right_kidney": codes.SCT.Right, "left_kidney": codes.SCT.Left}
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=organ.replace("_", " ").capitalize(),
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=types.get(organ, codes.SCT.Kidney),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="organseg", family=codes.DCM.ArtificialIntelligence, version=__version__
        ),
        display_color=hd.color.CIELabColor.from_rgb(*ORGAN_COLOURS[organ]),
    )
    if organ in laterality:
        modifier = hd.sr.CodedConcept.from_code(laterality[organ])
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


@pytest.mark.parametrize("organ", list(ORGAN_LABELS))
def test_chaos_segments_are_content_identical_to_before(organ: str) -> None:
    for number in (1, 3):
        new = segment_description(number, chaos_label_set()[organ])
        assert new == chaos_description_as_before(number, organ)


def ct_case(synth_root: Path):
    ref = next(r for r in discover_cases(synth_root) if r.case_id == "CT/1")
    return ref, load_case(ref)


def nine_labels(shape: tuple[int, int, int]) -> np.ndarray:
    _, labels, _ = make_abdomen_phantom(size=shape[1], slices=shape[0], seed=3)
    assert labels.shape == shape
    return labels


def write_nine(synth_root: Path, out: Path, label_set: LabelSet | None = None):
    ref, ct = ct_case(synth_root)
    labels = nine_labels(ct.label.shape)
    label_set = label_set or abdomen_label_set()
    path = write_dicom_seg(ct.label.with_array(labels), ref.image_dir, out, label_set)
    return path, labels, ct.label.geometry, ref.image_dir


def test_nine_labels_give_nine_coded_segments_read_back_exactly(synth_root, tmp_path) -> None:
    path, labels, geometry, folder = write_nine(synth_root, tmp_path / "nine.dcm")
    label_set = abdomen_label_set()
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 9
    for number, label in enumerate(label_set, start=1):
        item = seg.get_segment_description(number)
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == (
            label.code.type.value,
            "SCT",
            label.code.type.meaning,
        )
        modifiers = [m.CodeValue for m in prop.get("SegmentedPropertyTypeModifierCodeSequence", [])]
        expected = {"right_kidney": ["24028007"], "left_kidney": ["7771000"]}.get(label.name, [])
        assert modifiers == expected
        assert item.SegmentLabel == label.name.replace("_", " ").capitalize()
    # the kidneys share one type code: only laterality tells them apart
    assert seg.get_segment_description(2).SegmentedPropertyTypeCodeSequence[0].CodeValue == (
        seg.get_segment_description(3).SegmentedPropertyTypeCodeSequence[0].CodeValue
    )
    source = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    back = read_dicom_seg(
        path,
        geometry,
        labels.shape,
        str(source.SeriesInstanceUID),
        str(source.FrameOfReferenceUID),
        label_set=label_set,
    )
    np.testing.assert_array_equal(back, labels)


def test_segments_are_matched_by_code_when_labels_are_renamed(synth_root, tmp_path) -> None:
    """A SEG from another tool names segments its own way: its codes still place them."""
    path, labels, geometry, _ = write_nine(synth_root, tmp_path / "nine.dcm")
    ds = pydicom.dcmread(path)
    for item in ds.SegmentSequence:
        item.SegmentLabel = f"segment {item.SegmentNumber}"
    ds.save_as(path)
    back = read_dicom_seg(path, geometry, labels.shape, label_set=abdomen_label_set())
    np.testing.assert_array_equal(back, labels)
    # A set without some of those structures refuses the SEG, naming the segment.
    with pytest.raises(DataError, match=r"segment 5 \('segment 5'\) matches no label"):
        read_dicom_seg(path, geometry, labels.shape, label_set=chaos_label_set())


def test_unknown_label_gets_the_generic_code_with_its_name(synth_root, tmp_path) -> None:
    names = ["liver", "portal_vein_and_splenic_vein", "Tumour", "left_kidney"]
    label_set = LabelSet.from_names(names)
    ref, ct = ct_case(synth_root)
    labels = np.minimum(nine_labels(ct.label.shape), 4).astype(np.uint8)
    path = write_dicom_seg(
        ct.label.with_array(labels), ref.image_dir, tmp_path / "g.dcm", label_set
    )
    seg = hd.seg.segread(path)
    vein = seg.get_segment_description(2).SegmentedPropertyTypeCodeSequence[0]
    assert vein.CodingSchemeDesignator == PRIVATE_SCHEME
    assert vein.LongCodeValue == "portal_vein_and_splenic_vein"  # over 16 characters: UC
    assert vein.CodeMeaning == "portal_vein_and_splenic_vein"
    tumour = seg.get_segment_description(3)
    assert tumour.SegmentLabel == "Tumour"
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tumour"
    category = tumour.SegmentedPropertyCategoryCodeSequence[0]
    assert category.CodingSchemeDesignator == PRIVATE_SCHEME
    back = read_dicom_seg(path, ct.label.geometry, labels.shape, label_set=label_set)
    np.testing.assert_array_equal(back, labels)


def test_user_codes_are_written(synth_root, tmp_path) -> None:
    lesion = StructureCode(
        Code("49755003", "SCT", "Morphologically Altered Structure"),
        Code("4147007", "SCT", "Mass"),
    )
    label_set = LabelSet.from_names(["liver", "lesion"]).with_codes({"lesion": lesion})
    ref, ct = ct_case(synth_root)
    labels = np.minimum(nine_labels(ct.label.shape), 2).astype(np.uint8)
    path = write_dicom_seg(
        ct.label.with_array(labels), ref.image_dir, tmp_path / "u.dcm", label_set
    )
    item = hd.seg.segread(path).get_segment_description(2)
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "4147007"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"


def test_values_outside_the_label_set_are_refused(synth_root, tmp_path) -> None:
    ref, ct = ct_case(synth_root)
    labels = nine_labels(ct.label.shape)
    short = LabelSet.from_names(["liver", "right_kidney"])
    with pytest.raises(DataError, match=r"values \[3, 4, 5, 6, 7, 8, 9\] that are no label"):
        write_dicom_seg(ct.label.with_array(labels), ref.image_dir, tmp_path / "x.dcm", short)
    assert not (tmp_path / "x.dcm").exists()


def test_colours_come_from_the_label_set(synth_root, tmp_path) -> None:
    label_set = abdomen_label_set()
    recoloured = replace(
        label_set, labels=(replace(label_set.labels[0], colour=(0, 0, 255)), *label_set.labels[1:])
    )
    path, *_ = write_nine(synth_root, tmp_path / "c.dcm", recoloured)
    lab = hd.seg.segread(path).get_segment_description(1).RecommendedDisplayCIELabValue
    assert list(lab) == list(hd.color.CIELabColor.from_rgb(0, 0, 255).value)


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def test_dciodvfy_finds_no_error_in_a_nine_segment_seg(synth_root, tmp_path) -> None:
    if shutil.which("dciodvfy") is None:
        message = "dciodvfy not installed; install the Debian package dicom3tools"
        if os.environ.get("ORGANSEG_REQUIRE_DCIODVFY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    path, *_ = write_nine(synth_root, tmp_path / "nine.dcm")
    assert hd.seg.segread(path).number_of_segments == 9
    assert dciodvfy_errors(path) == []
    # The check can fail: a SEG stripped of a required attribute is reported.
    broken = pydicom.dcmread(path)
    del broken.SegmentSequence[0].SegmentAlgorithmType
    broken.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm")
