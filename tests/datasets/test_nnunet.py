"""nnU-Net v2 raw datasets: read as they lie, and every broken dataset ends in one problem naming its
file or dataset.json key, found before anything trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.datasets import open_nnunet
from organseg.errors import DataError
from organseg.modalities import Modality
from tests.datasets.builder import (
    LABELS,
    SHAPE,
    build_nnunet,
    channel_array,
    edit_json,
    image,
    label_array,
    write_json,
)


def test_reads_channels_and_labels_as_written(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "ds", channels=("MR-T1-in", "T1-out"), test_cases=("case_t",))
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert dataset.format == "nnunet"
    assert dataset.channel_names == ("MR-T1-in", "T1-out")
    assert [c.case_id for c in dataset.cases] == ["case_a", "case_b"]
    assert [c.case_id for c in dataset.test_cases] == ["case_t"]
    assert dataset.label_set is not None
    assert dataset.label_set.names == ("liver", "spleen", "aorta")
    case = dataset.load("case_b")
    assert len(case.channels) == 2
    for index, channel in enumerate(case.channels):
        np.testing.assert_array_equal(channel.array, channel_array(1, index))
        assert channel.spacing == (1.5, 1.5, 3.0)
        assert channel.origin == (-7.5, -6.0, 10.0)
    assert case.channels[0].modality is Modality.MR_T1_IN  # a modality organseg knows, exactly
    assert case.channels[1].modality is Modality.UNKNOWN  # aliases are not evidence
    assert case.label is not None
    np.testing.assert_array_equal(case.label.array, label_array(1))
    assert dataset.load("case_t", with_label=False).label is None


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_every_file_ending_reads(tmp_path: Path, ending: str) -> None:
    dataset = open_nnunet(build_nnunet(tmp_path / "ds", file_ending=ending))
    assert dataset.check() == []
    assert dataset.load("case_a").image.shape == SHAPE


def test_splits_final_gives_the_folds(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "ds", cases=("a", "b", "c"))
    write_json(
        root / "splits_final.json",
        [{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a", "b"]}],
    )
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert dataset.split(1) == (["c"], ["a", "b"])
    with pytest.raises(DataError, match=r"splits_final.json: no fold 2; it has folds 0-1"):
        dataset.split(2)


def _grid_moved(root: Path, relative: str, **kwargs: object) -> None:
    path = root / relative
    data = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    sitk.WriteImage(image(data, **kwargs), str(path))  # type: ignore[arg-type]


def _write_label(root: Path, array: np.ndarray) -> None:
    sitk.WriteImage(image(array), str(root / "labelsTr" / "case_b.nii.gz"))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (breakage, where the problem points, words of its message)
    "missing channel file": (
        lambda r: (r / "imagesTr" / "case_b_0001.nii.gz").unlink(),
        "imagesTr/case_b_0001.nii.gz",
        "missing: channel 1 ('T1-out') of case case_b",
    ),
    "missing label file": (
        lambda r: (r / "labelsTr" / "case_a.nii.gz").unlink(),
        "labelsTr/case_a.nii.gz",
        "case case_a has images but no label map",
    ),
    "numTraining disagrees": (
        lambda r: edit_json(r / "dataset.json", numTraining=5),
        "dataset.json: numTraining",
        "is 5 but imagesTr/labelsTr hold 2 case(s)",
    ),
    "label values not in dataset.json": (
        lambda r: _write_label(
            r, np.where(label_array(1) == 3, 7, label_array(1)).astype(np.uint8)
        ),
        "labelsTr/case_b.nii.gz",
        "case case_b: label value(s) [7] not in dataset.json labels",
    ),
    "non-integer label map": (
        lambda r: _write_label(r, label_array(1).astype(np.float32) * 0.5),
        "labelsTr/case_b.nii.gz",
        "case case_b: label map holds non-integer values",
    ),
    "image and label grids differ": (
        lambda r: _grid_moved(r, "labelsTr/case_a.nii.gz", spacing=(1.5, 1.5, 2.0)),
        "labelsTr/case_a.nii.gz",
        "case case_a: label map grid",
    ),
    "channel grids differ": (
        lambda r: _grid_moved(r, "imagesTr/case_b_0001.nii.gz", origin=(0.0, 0.0, 0.0)),
        "imagesTr/case_b_0001.nii.gz",
        "case case_b: channel 'T1-out' is on another grid than channel 'T1-in'",
    ),
    "unknown file_ending": (
        lambda r: edit_json(r / "dataset.json", file_ending=".png"),
        "dataset.json: file_ending",
        "'.png' is not one organseg reads",
    ),
    "region labels without regions_class_order": (
        lambda r: edit_json(
            r / "dataset.json", labels={"background": 0, "whole": [1, 2, 3], "core": [2, 3]}
        ),
        "dataset.json: regions_class_order",
        "need regions_class_order",
    ),
    "ignore label not the highest": (
        lambda r: edit_json(r / "dataset.json", labels={**LABELS, "aorta": 4, "ignore": 3}),
        "dataset.json: labels.ignore",
        "the ignore label (3) must be the highest value, above 4",
    ),
    "case listed in splits but absent": (
        lambda r: write_json(
            r / "splits_final.json", [{"train": ["case_a", "case_z"], "val": ["case_b"]}]
        ),
        "splits_final.json: [0].train",
        "lists case(s) absent from the dataset: ['case_z']",
    ),
    "required key missing": (
        lambda r: edit_json(r / "dataset.json", channel_names=None),
        "dataset.json: channel_names",
        "missing (nnU-Net v2 requires it)",
    ),
    "image named with another ending": (
        lambda r: (r / "imagesTr" / "case_a_0002.nrrd").write_bytes(b""),
        "imagesTr/case_a_0002.nrrd",
        "not named {case}_{XXXX}.nii.gz",
    ),
    "test image on another grid": (
        lambda r: (
            (r / "imagesTs").mkdir(),
            sitk.WriteImage(image(channel_array(0, 0)), str(r / "imagesTs" / "t_0000.nii.gz")),
            sitk.WriteImage(
                image(channel_array(0, 1), spacing=(1.0, 1.0, 1.0)),
                str(r / "imagesTs" / "t_0001.nii.gz"),
            ),
        ),
        "imagesTs/t_0001.nii.gz",
        "case t: channel 'T1-out' is on another grid than channel 'T1-in'",
    ),
    "label named with a channel number": (
        lambda r: (r / "labelsTr" / "case_a.nii.gz").rename(r / "labelsTr" / "case_a_0000.nii.gz"),
        "labelsTr/case_a_0000.nii.gz",
        "without a channel number: rename it to case_a.nii.gz",
    ),
    "unreadable image": (
        lambda r: (r / "imagesTr" / "case_a_0000.nii.gz").write_bytes(b"not an image"),
        "imagesTr/case_a_0000.nii.gz",
        "not a readable image",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_every_problem_is_one_error_naming_file_or_key(tmp_path: Path, breakage: str) -> None:
    root = build_nnunet(tmp_path / "ds", channels=("T1-in", "T1-out"))
    breaker, where, words = BREAKAGES[breakage]
    breaker(root)
    problems = open_nnunet(root).check()
    assert len(problems) == 1, problems
    assert problems[0].where.startswith(str(root))
    assert problems[0].where.endswith(where)
    assert words in problems[0].message
    with pytest.raises(DataError) as caught:
        open_nnunet(root).require_valid()
    assert f"1 problem(s) in this nnunet dataset: {root}/{where}: " in str(caught.value)
    assert words in str(caught.value)


def test_non_finite_label_map(tmp_path: Path) -> None:
    # NRRD: ITK's NIfTI reader turns NaN and infinity into 0 before anyone can see them
    root = build_nnunet(tmp_path / "ds", file_ending=".nrrd")
    labels = np.where(label_array(1) == 2, np.inf, label_array(1)).astype(np.float32)
    sitk.WriteImage(image(labels), str(root / "labelsTr" / "case_b.nrrd"))
    [problem] = open_nnunet(root).check()
    assert problem.where == str(root / "labelsTr" / "case_b.nrrd")
    assert problem.message == "case case_b: label map holds NaN or infinite values"


def test_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "ds", cases=("a", "b", "c"))
    (root / "labelsTr" / "a.nii.gz").unlink()
    edit_json(root / "dataset.json", numTraining=2)
    _grid_moved(root, "labelsTr/b.nii.gz", origin=(1.0, 2.0, 3.0))
    wheres = sorted(p.where.removeprefix(f"{root}/") for p in open_nnunet(root).check())
    assert wheres == ["dataset.json: numTraining", "labelsTr/a.nii.gz", "labelsTr/b.nii.gz"]


def test_loading_a_broken_case_names_it(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "ds")
    _write_label(root, (label_array(1) + 5).astype(np.uint8))
    dataset = open_nnunet(root)
    dataset.load("case_a")
    with pytest.raises(DataError, match=r"labelsTr/case_b.nii.gz: case case_b: label value\(s\)"):
        dataset.load("case_b")


def test_region_labels_with_their_order_are_read(tmp_path: Path) -> None:
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
    root = build_nnunet(tmp_path / "ds", labels=labels, extra={"regions_class_order": [1, 2, 3]})
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert dataset.label_set is not None
    assert dataset.label_set.region_based
    assert dataset.label_set.regions_class_order == (1, 2, 3)


def test_user_codes_from_dataset_json(tmp_path: Path) -> None:
    labels = {"background": 0, "liver": 1, "lesion": 2}
    codes = {
        "lesion": {
            "type": ["52988006", "SCT", "Lesion"],
            "category": ["49755003", "SCT", "Morphologically Abnormal Structure"],
        }
    }
    root = build_nnunet(tmp_path / "ds", labels=labels, extra={"label_codes": codes})
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert dataset.label_set is not None
    assert dataset.label_set["lesion"].code.type.meaning == "Lesion"
    edit_json(root / "dataset.json", label_codes={"kidney": ["64033007", "SCT", "Kidney"]})
    [problem] = open_nnunet(root).check()
    assert problem.where.endswith("dataset.json: label_codes.kidney")


def test_not_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        open_nnunet(tmp_path / "absent")
    [problem] = open_nnunet(tmp_path).check()[:1]
    assert problem.where.endswith("dataset.json")
    assert problem.message == "missing"
