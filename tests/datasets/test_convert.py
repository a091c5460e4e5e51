"""CHAOS → nnU-Net: the converted datasets read back with the CHAOS reader's voxels, geometry and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.datasets import open_nnunet
from organseg.datasets.convert import chaos_case_name, convert_chaos_to_nnunet
from organseg.errors import DataError
from organseg.io.chaos import discover_cases, load_case
from organseg.modalities import Modality
from organseg.preprocess import PreprocessConfig, prepare_volume, resize_slices
from tests.datasets.builder import read_json


def _assert_same(dataset_root: Path, chaos_root: Path, modalities: list[Modality]) -> int:
    """Every converted case equals what the CHAOS reader gives; returns how many were compared."""
    dataset = open_nnunet(dataset_root).require_valid()
    compared = 0
    refs = [r for r in discover_cases(chaos_root) if r.modality in modalities]
    for patient in sorted({r.patient for r in refs}):
        converted = dataset.load(chaos_case_name(patient))
        by_modality = {r.modality: r for r in refs if r.patient == patient}
        for modality, channel in zip(modalities, converted.channels, strict=True):
            original = load_case(by_modality[modality])
            np.testing.assert_array_equal(channel.array, original.image.array)
            assert channel.array.dtype == original.image.array.dtype
            assert channel.geometry.isclose(original.image.geometry, rtol=1e-6, atol=1e-5)
            assert channel.modality is modality
            assert converted.label is not None
            assert original.label is not None
            np.testing.assert_array_equal(converted.label.array, original.label.array)
            compared += 1
    return compared


def test_synthetic_chaos_becomes_three_nnunet_datasets(synth_root: Path, tmp_path: Path) -> None:
    written = convert_chaos_to_nnunet(synth_root, tmp_path / "out", first_id=600)
    assert [p.name for p in written] == [
        "Dataset600_CHAOSCT",
        "Dataset601_CHAOSMRT1DUAL",
        "Dataset602_CHAOSMRT2SPIR",
    ]
    ct, t1, t2 = written
    assert read_json(ct / "dataset.json")["labels"] == {"background": 0, "liver": 1}
    assert read_json(t1 / "dataset.json")["channel_names"] == {"0": "MR-T1-in", "1": "MR-T1-out"}
    assert read_json(t2 / "dataset.json")["labels"] == {
        "background": 0,
        "liver": 1,
        "right_kidney": 2,
        "left_kidney": 3,
        "spleen": 4,
    }
    assert sorted(p.name for p in (t1 / "imagesTr").iterdir()) == [
        "chaos_mr_1_0000.nii.gz",
        "chaos_mr_1_0001.nii.gz",
        "chaos_mr_2_0000.nii.gz",
        "chaos_mr_2_0001.nii.gz",
    ]
    assert _assert_same(ct, synth_root, [Modality.CT]) == 2
    assert _assert_same(t1, synth_root, [Modality.MR_T1_IN, Modality.MR_T1_OUT]) == 4
    assert _assert_same(t2, synth_root, [Modality.MR_T2SPIR]) == 2


def test_refuses_to_overwrite_and_non_chaos_sources(synth_root: Path, tmp_path: Path) -> None:
    convert_chaos_to_nnunet(synth_root / "Train_Sets" / "CT", tmp_path / "out")
    with pytest.raises(DataError, match="folder is not empty"):
        convert_chaos_to_nnunet(synth_root / "Train_Sets" / "CT", tmp_path / "out")
    convert_chaos_to_nnunet(synth_root / "Train_Sets" / "CT", tmp_path / "out", overwrite=True)
    with pytest.raises(DataError, match="no CHAOS series found"):
        convert_chaos_to_nnunet(tmp_path / "out", tmp_path / "again")


@pytest.mark.sample
@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_real_chaos_ct_case_reads_back_the_same(
    chaos_sample: Path, tmp_path: Path, ending: str
) -> None:
    [ct] = convert_chaos_to_nnunet(chaos_sample, tmp_path / "out", file_ending=ending)
    assert _assert_same(ct, chaos_sample, [Modality.CT]) == 1
    converted = open_nnunet(ct).load("chaos_ct_1")
    original = load_case(discover_cases(chaos_sample)[0])
    # file-name slice order: the CHAOS CT folder runs against the patient axis, and so does the copy
    assert converted.image.geometry == original.image.geometry
    assert np.linalg.det(converted.image.geometry.direction_matrix) < 0


def _same_prepared(
    converted: list, originals: list, label, original_label, cfg: PreprocessConfig
) -> None:
    """The one preprocessing path gives the same slices and masks from both forms."""
    a = prepare_volume(converted[0], cfg, partner=converted[1] if len(converted) > 1 else None)
    b = prepare_volume(originals[0], cfg, partner=originals[1] if len(originals) > 1 else None)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.modalities == b.modalities
    assert a.prepared_geometry.isclose(b.prepared_geometry)
    np.testing.assert_array_equal(
        resize_slices(label.array, cfg.size, order=0),
        resize_slices(original_label.array, cfg.size, order=0),
    )


def test_synthetic_mr_t1_prepares_like_its_chaos_form(synth_root: Path, tmp_path: Path) -> None:
    written = convert_chaos_to_nnunet(synth_root / "Train_Sets" / "MR", tmp_path / "out")
    t1 = next(p for p in written if p.name.endswith("T1DUAL"))
    converted = open_nnunet(t1).load("chaos_mr_1")
    refs = {r.modality: r for r in discover_cases(synth_root / "Train_Sets" / "MR" / "1")}
    originals = [load_case(refs[m]) for m in (Modality.MR_T1_IN, Modality.MR_T1_OUT)]
    _same_prepared(
        list(converted.channels),
        [o.image for o in originals],
        converted.label,
        originals[0].label,
        PreprocessConfig(size=64, t1_mode="stack"),
    )


@pytest.mark.sample
def test_real_chaos_ct_case_prepares_like_its_chaos_form(
    chaos_sample: Path, tmp_path: Path
) -> None:
    [ct] = convert_chaos_to_nnunet(chaos_sample, tmp_path / "out")
    converted = open_nnunet(ct).load("chaos_ct_1")
    original = load_case(discover_cases(chaos_sample)[0])
    _same_prepared(
        [converted.image], [original.image], converted.label, original.label, PreprocessConfig()
    )
