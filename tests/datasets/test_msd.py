"""MSD datasets: 4D images split into channels on one grid, listed files checked, nnU-Net → MSD copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.datasets import open_msd, open_nnunet
from organseg.datasets.write import nnunet_to_msd
from organseg.errors import DataError
from organseg.modalities import Modality
from tests.datasets.builder import (
    build_msd,
    build_nnunet,
    channel_array,
    edit_json,
    image,
    label_array,
    read_json,
)


def test_4d_images_become_channels(tmp_path: Path) -> None:
    dataset = open_msd(build_msd(tmp_path / "ds", channels=("T1", "T2")))
    assert dataset.check() == []
    assert dataset.format == "msd"
    assert dataset.channel_names == ("T1", "T2")
    assert dataset.label_set is not None
    assert dataset.label_set.names == ("liver", "spleen")
    case = dataset.load("case_b")
    for index, channel in enumerate(case.channels):
        np.testing.assert_array_equal(channel.array, channel_array(1, index))
        assert channel.spacing == (1.5, 1.5, 3.0)
        assert channel.origin == (-7.5, -6.0, 10.0)
    assert case.label is not None
    np.testing.assert_array_equal(case.label.array, label_array(1, {"liver": 1, "spleen": 2}))


def test_channel_names_give_a_modality_only_when_exact(tmp_path: Path) -> None:
    dataset = open_msd(build_msd(tmp_path / "ds", channels=("T2", "ct")))
    first, second = dataset.load("case_a").channels
    assert first.modality is Modality.UNKNOWN  # "T2" is not known to be T2-SPIR: no guess
    assert second.modality is Modality.CT
    assert first.meta == {"case_id": "case_a", "channel": "T2"}


def test_3d_single_channel(tmp_path: Path) -> None:
    dataset = open_msd(build_msd(tmp_path / "ds", channels=("CT",)))
    assert dataset.check() == []
    assert len(dataset.load("case_a").channels) == 1


def test_listed_but_absent_names_the_entry(tmp_path: Path) -> None:
    root = build_msd(tmp_path / "ds")
    (root / "imagesTr" / "case_b.nii.gz").unlink()
    [problem] = open_msd(root).check()
    assert problem.where == f"{root / 'dataset.json'}: training[1].image"
    assert "lists ./imagesTr/case_b.nii.gz but" in problem.message


def test_numtraining_and_channel_count(tmp_path: Path) -> None:
    root = build_msd(tmp_path / "ds")
    edit_json(root / "dataset.json", numTraining=3)
    [problem] = open_msd(root).check()
    assert problem.where.endswith("dataset.json: numTraining")
    edit_json(root / "dataset.json", numTraining=2, modality={"0": "T1", "1": "T2", "2": "FLAIR"})
    problems = open_msd(root).check()
    assert [p.where for p in problems] == [
        str(root / "imagesTr" / f"{c}.nii.gz") for c in ("case_a", "case_b")
    ]
    assert (
        "holds 2 channel(s) (a 4D image) but dataset.json modality names 3" in problems[0].message
    )


def test_label_outside_the_labels(tmp_path: Path) -> None:
    root = build_msd(tmp_path / "ds")
    sitk.WriteImage(
        image(np.full((6, 8, 10), 9, np.uint8)), str(root / "labelsTr" / "case_a.nii.gz")
    )
    with pytest.raises(
        DataError, match=r"labelsTr/case_a.nii.gz: case case_a: label value\(s\) \[9\]"
    ):
        open_msd(root).require_valid()


def test_msd_copy_of_an_nnunet_dataset(tmp_path: Path) -> None:
    source = build_nnunet(tmp_path / "nn", channels=("T1-in", "T1-out"))
    copy = nnunet_to_msd(source, tmp_path / "msd")
    manifest = read_json(copy / "dataset.json")
    assert manifest["modality"] == {"0": "T1-in", "1": "T1-out"}
    assert manifest["labels"] == {"0": "background", "1": "liver", "2": "spleen", "3": "aorta"}
    original, msd = open_nnunet(source), open_msd(copy)
    assert msd.check() == []
    for case in original.cases:
        a, b = original.load(case), msd.load(case.case_id)
        for x, y in zip(a.channels, b.channels, strict=True):
            np.testing.assert_array_equal(x.array, y.array)
            assert x.geometry == y.geometry
        np.testing.assert_array_equal(a.label.array, b.label.array)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("channels", "extra", "modalities"),
    [
        (
            ("phase_a", "phase_b"),
            {
                "organseg_channel_modalities": {"phase_a": "CT", "1": "CT"},
                "label_codes": {"aorta": ["15825003", "SCT", "Aorta"]},
            },
            (Modality.CT, Modality.CT),
        ),
        (("image",), {"organseg_case_modalities": {"case_a": "CT", "case_*": "MR"}}, None),
    ],
)
def test_msd_copy_carries_the_modality_maps_and_label_codes(
    tmp_path: Path, channels: tuple[str, ...], extra: dict, modalities: tuple | None
) -> None:
    """The dataset.json keys organseg reads in both formats travel into the MSD copy, so it routes
    and codes its cases as the nnU-Net form does."""
    source = build_nnunet(tmp_path / "nn", channels=channels, extra=extra)
    copy = nnunet_to_msd(source, tmp_path / "msd")
    manifest = read_json(copy / "dataset.json")
    assert {key: manifest[key] for key in extra} == extra
    original, msd = open_nnunet(source), open_msd(copy)
    assert msd.check() == []
    found = msd.case_modalities()[0]
    assert found == original.case_modalities()[0]
    if modalities is not None:
        assert found["case_a"] == modalities
    else:
        assert (found["case_a"], found["case_b"]) == ((Modality.CT,), (Modality.MR,))
    assert msd.label_set == original.label_set
