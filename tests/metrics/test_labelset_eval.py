"""`organseg evaluate` with any label set: the nine-label synthetic nnU-Net dataset (and its MSD copy)
scored per label from NIfTI predictions and from a nine-segment DICOM-SEG; JSON out; bad input named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from organseg.datasets.write import nnunet_to_msd
from organseg.errors import DataError
from organseg.io import discover_cases, load_case
from organseg.io.dicomseg import write_dicom_seg
from organseg.io.files import read_volume_file, write_volume_file
from organseg.io.volume import Volume
from organseg.metrics.labelset_eval import (
    evaluate_label_files,
    evaluate_label_folder,
    read_label_set,
)
from organseg.metrics.labelwise import evaluate_label_maps
from organseg.synth.abdomen import ABDOMEN_LABELS, abdomen_label_set, write_abdomen_dataset
from tests.conftest import run_cli as run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("abdomen") / "Dataset001_Abdomen"
    return write_abdomen_dataset(root, cases=3, size=48, slices=10, seed=5)


def case_ids(root: Path) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (root / "labelsTr").glob("*.nii.gz"))


@pytest.fixture(scope="module")
def predictions(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Case 1 exact, case 2 with a grown pancreas and a shrunken liver, case 3 missing."""
    out = tmp_path_factory.mktemp("predictions")
    first, second, _ = case_ids(dataset)
    shutil.copy(dataset / "labelsTr" / f"{first}.nii.gz", out / f"{first}.nii.gz")
    volume = read_volume_file(dataset / "labelsTr" / f"{second}.nii.gz")
    array = np.asarray(volume.array).copy()
    pancreas, liver = ABDOMEN_LABELS.index("pancreas") + 1, ABDOMEN_LABELS.index("liver") + 1
    grown = ndimage.binary_dilation(array == pancreas) & (array == 0)
    array[grown] = pancreas
    array[(array == liver) & ~ndimage.binary_erosion(array == liver)] = 0
    write_volume_file(volume.with_array(array), out / f"{second}.nii.gz")
    return out


def test_a_dataset_is_scored_per_label_with_a_missing_case(dataset, predictions) -> None:
    label_set = read_label_set(dataset / "dataset.json")
    assert label_set.names == ABDOMEN_LABELS
    report = evaluate_label_folder(dataset, predictions, label_set)
    first, second, third = case_ids(dataset)
    assert list(report.cases) == [first, second, third]
    assert report.missing == [third]
    assert all(m.dice == 1.0 and m.nsd == 1.0 for m in report.cases[first].values())
    ref = read_volume_file(dataset / "labelsTr" / f"{second}.nii.gz")
    pred = read_volume_file(predictions / f"{second}.nii.gz")
    expected = evaluate_label_maps(ref.array, pred.array, ref.geometry, label_set)
    assert report.cases[second] == expected
    assert expected["pancreas"].dice < 1.0
    assert expected["pancreas"].ravd > 0
    assert expected["liver"].dice < 1.0
    assert expected["stomach"].dice == 1.0
    assert all(m.dice == 0.0 for m in report.cases[third].values() if m.ref_voxels)
    means = report.means()
    assert list(means) == list(ABDOMEN_LABELS)
    assert means["pancreas"]["dice"] == pytest.approx(
        np.mean([report.cases[c]["pancreas"].dice for c in (first, second, third)])
    )


def test_the_msd_copy_scores_the_same(dataset, predictions, tmp_path) -> None:
    msd = nnunet_to_msd(dataset, tmp_path / "Task01_Abdomen")
    label_set = read_label_set(msd)
    assert label_set.names == ABDOMEN_LABELS
    nnunet = evaluate_label_folder(dataset, predictions, read_label_set(dataset)).to_dict()
    again = evaluate_label_folder(msd, predictions, label_set).to_dict()
    assert again["cases"] == nnunet["cases"]
    assert again["mean"] == nnunet["mean"]


def test_cli_json_for_a_dataset_root_and_for_labels_given(
    dataset, predictions, tmp_path, capsys
) -> None:
    implied, given = tmp_path / "implied.json", tmp_path / "given.json"
    code, out, err = run(capsys, "evaluate", dataset, predictions, "--json", implied)
    assert code == 0, err
    assert "pancreas" in out
    assert "means per label" in out
    assert "no prediction for 1 case(s)" in err
    code, _, err = run(
        capsys,
        "evaluate",
        dataset / "labelsTr",
        predictions,
        "--labels",
        dataset / "dataset.json",
        "--json",
        given,
    )
    assert code == 0, err
    a, b = json.loads(implied.read_text()), json.loads(given.read_text())
    assert a["cases"] == b["cases"]
    assert a["labels"] == {n: i + 1 for i, n in enumerate(ABDOMEN_LABELS)}
    second = case_ids(dataset)[1]
    pancreas = a["cases"][second]["pancreas"]
    assert set(pancreas) >= {"dice", "hd95", "assd", "ravd", "nsd", "tolerance_mm"}
    assert pancreas["tolerance_mm"] == 1.0


def test_cli_single_case_with_tolerances_and_a_label_subset(
    dataset, predictions, tmp_path, capsys
) -> None:
    second = case_ids(dataset)[1]
    out_json = tmp_path / "one.json"
    code, _, err = run(
        capsys,
        "evaluate",
        dataset / "labelsTr" / f"{second}.nii.gz",
        predictions / f"{second}.nii.gz",
        "--labels",
        dataset,
        "--organs",
        "pancreas,liver",
        "--tolerance",
        "pancreas=2.5",
        "--json",
        out_json,
    )
    assert code == 0, err
    labels = json.loads(out_json.read_text())["labels"]
    assert list(labels) == ["liver", "pancreas"]
    assert (labels["pancreas"]["tolerance_mm"], labels["liver"]["tolerance_mm"]) == (2.5, 1.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dicom", "x"], "--dicom applies to CHAOS evaluation"),
        (["--csv", "x.csv"], "--csv applies to CHAOS evaluation"),
        (["--organs", "kidney"], "unknown label(s) ['kidney']"),
        (["--tolerance", "aorta=x"], "expected MM or LABEL=MM"),
        (["--tolerance", "pancreatic_duct=1"], "unknown label(s) ['pancreatic_duct']"),
    ],
)
def test_cli_option_errors_are_named(dataset, predictions, capsys, extra, message) -> None:
    code, _, err = run(capsys, "evaluate", dataset, predictions, *extra)
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def test_stray_values_and_other_grids_are_refused(dataset, predictions, tmp_path) -> None:
    first = case_ids(dataset)[0]
    ref = dataset / "labelsTr" / f"{first}.nii.gz"
    volume = read_volume_file(ref)
    stray = np.asarray(volume.array).copy()
    stray[0, 0, 0] = 12
    write_volume_file(volume.with_array(stray), tmp_path / "stray.nii.gz")
    with pytest.raises(DataError, match=r"stray.nii.gz vs .*prediction holds values \[12\]"):
        evaluate_label_files(ref, tmp_path / "stray.nii.gz", abdomen_label_set())
    cropped = Volume(np.asarray(volume.array)[:, 1:], volume.geometry)
    write_volume_file(cropped, tmp_path / "cropped.nii.gz")
    with pytest.raises(DataError, match=r"cropped\.nii\.gz lies on another grid"):
        evaluate_label_files(ref, tmp_path / "cropped.nii.gz", abdomen_label_set())
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 2}}))
    with pytest.raises(DataError, match=r"dataset.json: labels: values .* consecutive"):
        read_label_set(tmp_path / "dataset.json")


def test_a_nine_segment_seg_is_read_back_and_scored(synth_root, dataset, tmp_path, capsys) -> None:
    """A SEG written over a DICOM series, scored against the same labels as NIfTI: every label
    perfect, so every segment landed on its label and its slices."""
    from organseg.synth.abdomen import make_abdomen_phantom

    case = next(r for r in discover_cases(synth_root) if r.case_id == "CT/1")
    ct = load_case(case)
    _, labels, _ = make_abdomen_phantom(size=ct.label.shape[1], slices=ct.label.shape[0], seed=2)
    volume = ct.label.with_array(labels)
    reference = write_volume_file(volume, tmp_path / "reference.nii.gz")
    seg = write_dicom_seg(volume, case.image_dir, tmp_path / "nine.dcm", abdomen_label_set())
    out_json = tmp_path / "seg.json"
    code, _, err = run(
        capsys,
        "evaluate",
        reference,
        seg,
        "--labels",
        dataset / "dataset.json",
        "--json",
        out_json,
    )
    assert code == 0, err
    scored = json.loads(out_json.read_text())["labels"]
    assert list(scored) == list(ABDOMEN_LABELS)
    present = {ABDOMEN_LABELS[v - 1] for v in np.unique(labels) if v}
    assert len(present) == 9
    assert all(scored[n]["dice"] == 1.0 and scored[n]["hd95"] == 0.0 for n in ABDOMEN_LABELS)


def test_cli_overlay_for_a_label_set_case(dataset, predictions, tmp_path, capsys) -> None:
    """Over the case's CT channel, every label present filled in its own colour."""
    from PIL import Image

    from organseg.viz import image_box

    second = case_ids(dataset)[1]
    code, _, err = run(
        capsys,
        "evaluate",
        dataset / "labelsTr" / f"{second}.nii.gz",
        predictions / f"{second}.nii.gz",
        "--labels",
        dataset,
        "--overlay",
        tmp_path / "overlay",
    )
    assert code == 0, err
    assert "overlay PNGs" in err
    slices = sorted((tmp_path / "overlay").glob("slice_*.png"))
    assert slices
    assert (tmp_path / "overlay" / "montage.png").is_file()
    outlined = set()
    for path in slices:
        x0, y0, x1, y1 = image_box(path)
        pixels = np.asarray(Image.open(path).convert("RGB"))[y0:y1, x0:x1].reshape(-1, 3)
        outlined |= {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)}
    # reference outlines are drawn in each label's full colour
    shown = {lb.name for lb in abdomen_label_set() if lb.colour in outlined}
    assert len(shown) >= 7, shown
    code, _, err = run(capsys, "evaluate", dataset, predictions, "--overlay", tmp_path / "no")
    assert code != 0
    assert "--overlay applies to a single case" in err


def test_docs_example_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    from tests.conftest import REPO_ROOT
    from tests.docs.blocks import block_under, command_lines

    commands = command_lines(block_under(REPO_ROOT / "docs" / "data.md", "Evaluate any label set"))
    monkeypatch.chdir(tmp_path)
    assert len(commands) == 3
    for words in commands:
        assert words[0] == "organseg"
        code, _, err = run(capsys, *words[1:])
        assert code == 0, (words, err)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert list(scores["mean"]) == list(ABDOMEN_LABELS)
    assert all(v["dice"] == 1.0 for v in scores["mean"].values())
    assert (tmp_path / "overlay" / "montage.png").is_file()
