"""synth → read → write → read keeps arrays and geometry; the CHAOS reader on MR and CT layouts."""

from pathlib import Path

import numpy as np
import pytest

from organseg.io import (
    discover_cases,
    iter_cases,
    read_any,
    read_png_series,
    read_volume_file,
    write_png_series,
    write_volume_file,
)
from organseg.io.volume import Modality
from organseg.organs import ORGAN_LABELS


def test_discovers_every_series(synth_root: Path) -> None:
    refs = discover_cases(synth_root)
    assert [r.case_id for r in refs] == [
        "CT/1", "CT/2",
        "MR/1/T1DUAL-in", "MR/1/T1DUAL-out", "MR/1/T2SPIR",
        "MR/2/T1DUAL-in", "MR/2/T1DUAL-out", "MR/2/T2SPIR",
    ]  # fmt: skip
    by_id = {r.case_id: r for r in refs}
    assert by_id["MR/1/T1DUAL-in"].mask_dir == by_id["MR/1/T1DUAL-out"].mask_dir
    assert by_id["MR/1/T1DUAL-in"].patient == "MR/1"


def test_cases_load_with_labels(synth_root: Path) -> None:
    seen = set()
    for case_id, modality, image, label in iter_cases(synth_root):
        assert label is not None
        assert label.shape == image.shape
        organs = set(np.unique(label.array)) - {0}
        if modality is Modality.CT:
            assert organs == {ORGAN_LABELS["liver"]}
        else:
            assert organs <= set(ORGAN_LABELS.values())
            assert ORGAN_LABELS["liver"] in organs
        seen.add(modality)
        assert case_id
    assert seen == {Modality.CT, Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR}


def test_headers_agree_with_layout(synth_root: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a header/layout disagreement would warn
        for case in iter_cases(synth_root, with_label=False):
            assert case.image.modality is case.modality


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_round_trip_through_volume_files(synth_root: Path, tmp_path: Path, suffix: str) -> None:
    for ref in discover_cases(synth_root)[:3]:
        image = read_any(ref.image_dir)
        path = write_volume_file(image, tmp_path / f"{ref.case_id.replace('/', '_')}{suffix}")
        back = read_volume_file(path)
        np.testing.assert_array_equal(back.array, image.array)
        assert back.array.dtype == image.array.dtype
        assert back.geometry.isclose(image.geometry)
        assert back.modality is image.modality


def test_submission_png_round_trip(synth_root: Path, tmp_path: Path) -> None:
    case = next(c for c in iter_cases(synth_root) if c.modality is Modality.MR_T2SPIR)
    files = write_png_series(case.label, tmp_path / "pred", modality=case.modality)
    assert files[0].name == "results001.png"
    assert len(files) == case.image.shape[0]
    grey, _ = read_png_series(tmp_path / "pred")
    assert set(np.unique(grey)) <= {0, 63, 126, 189, 252}
    from organseg.io.png import grey_to_labels

    np.testing.assert_array_equal(grey_to_labels(grey, case.modality), case.label.array)


def test_png_writer_keeps_existing_results(tmp_path: Path) -> None:
    from organseg.errors import DataError

    out = tmp_path / "pred"
    write_png_series(np.ones((2, 4, 4), np.uint8), out, modality="CT")
    with pytest.raises(DataError, match="not empty"):
        write_png_series(np.zeros((2, 4, 4), np.uint8), out, modality="CT")
    grey, _ = read_png_series(out)
    assert grey.max() == 63


def test_sequence_folder_of_an_mr_case(synth_root: Path) -> None:
    refs = discover_cases(synth_root / "Train_Sets" / "MR" / "1" / "T2SPIR")
    assert [(r.case_id, r.modality) for r in refs] == [("MR/1/T2SPIR", Modality.MR_T2SPIR)]
    refs = discover_cases(synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL")
    assert [r.modality for r in refs] == [Modality.MR_T1_IN, Modality.MR_T1_OUT]
