"""A label set of the user's, end to end: the nine-label synthetic nnU-Net dataset trains two members in
parallel (once per module, on the session's Ray cluster), the model predicts several of its labels,
HTTP and gRPC answer the same masks as ``predict --local`` with the model's label values, the
DICOM-SEG of a prediction carries one coded segment per label (locally and over STOW-RS), is valid by
``dciodvfy`` and scores per label exactly as the NIfTI prediction does, and overlays show each label
in its own colour.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from organseg.config import parse_config
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.io.dicom import read_dicom_series
from organseg.io.dicomseg import read_dicom_seg
from organseg.io.files import read_volume_file, write_volume_file
from organseg.io.volume import Geometry, Volume
from organseg.synth.abdomen import (
    ABDOMEN_LABELS,
    abdomen_label_set,
    write_abdomen_dataset,
    write_abdomen_dicom,
)
from tests.conftest import loopback_serve_config, run_cli, serving

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP_PORT, GRPC_PORT = 18348, 19348
#: The dataset: few, small cases and many optimizer steps per epoch (an epoch's fixed cost, its
#: report and checkpoint, outweighs its steps at this size).
SIZE, SLICES, CASES, SEED = 32, 24, 6, 1
#: What a trained model must reach on a case it trained on: a modest bar a network that predicts
#: nothing (an untrained one, or one that learnt only background) cannot pass.
DICE_BAR, LABELS_OVER_BAR = 0.5, 4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own-labels") / "Dataset010_Abdomen"
    return write_abdomen_dataset(root, cases=CASES, size=SIZE, slices=SLICES, seed=SEED)


def _experiment(root: Path, dataset: Path):
    member = {"in_channels": 1, "epochs": 14, "batch_size": 8, "optimizer": {"lr": 0.01}}
    return parse_config(
        {
            "name": "own-labels",
            "storage_path": str(root / "runs"),
            "dataset": {"path": str(dataset), "val_fraction": 0.34, "cache_dir": str(root / "c")},
            "preprocess": {"size": SIZE},
            "augment": {"enabled": False},
            "members": [
                {"name": "dualtail", "arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}}
                | member,
                {
                    "name": "attn",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 8, "depth": 3},
                }
                | member,
            ],
        },
        source="own-labels (test config)",
    )


@pytest.fixture(scope="module")
def trained(ray_cluster: str, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(model dir, a case the members trained on)``: both members trained in parallel."""
    from organseg.train.data import prepare_data
    from organseg.train.launcher import train_experiment

    config = _experiment(tmp_path_factory.mktemp("own-labels-run"), dataset)
    report = train_experiment(config)
    assert report.ok, [o.error for o in report.outcomes]
    assert sorted(o.name for o in report.outcomes) == ["attn", "dualtail"]
    train_ids = prepare_data(config).train_ids  # the cache is built: this only reads the split
    return report.model_dir, sorted(train_ids)[0]


@pytest.fixture(scope="module")
def served(trained):
    model_dir, _ = trained
    with serving(loopback_serve_config(model_dir, HTTP_PORT, GRPC_PORT)):
        yield f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}"


def _case_files(dataset: Path, case: str) -> tuple[Path, Path]:
    return dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"


def _index(case: str) -> int:
    return int(case.rsplit("_", 1)[1])


def _scores(capsys, reference: Path, prediction: Path, dataset: Path, out: Path) -> dict:
    code, _, err = run_cli(
        capsys, "evaluate", reference, prediction, "--labels", dataset, "--json", out
    )
    assert code == 0, err
    return json.loads(out.read_text())["labels"]


def test_the_trained_model_predicts_several_labels(trained, dataset, tmp_path, capsys) -> None:
    """``predict --local`` on a training case, scored per label by ``evaluate --labels``: several
    labels found (a model that predicts nothing, or one label, fails here)."""
    model_dir, case = trained
    image, reference = _case_files(dataset, case)
    out = tmp_path / f"{case}.nii.gz"
    code, _, err = run_cli(capsys, "predict", image, "--local", model_dir, "--modality", "CT", "-o", out)  # fmt: skip
    assert code == 0, err
    predicted = np.asarray(read_volume_file(out).array)
    assert set(np.unique(predicted).tolist()) <= {0, *abdomen_label_set().values}
    scores = _scores(capsys, reference, out, dataset, tmp_path / "scores.json")
    assert list(scores) == list(ABDOMEN_LABELS)
    assert {"dice", "hd95", "assd", "ravd", "nsd"} <= set(scores["liver"])
    over = [name for name, s in scores.items() if s["dice"] is not None and s["dice"] > DICE_BAR]
    assert len(over) >= LABELS_OVER_BAR, scores
    assert len(set(np.unique(predicted).tolist()) - {0}) >= LABELS_OVER_BAR


def _answer_labels(result: dict, labels: bytes) -> Volume:
    from organseg.serve.wire import decode_labels

    geometry = Geometry(result["spacing"], result["origin"], result["direction"])
    return decode_labels(labels, result["output_format"], result["shape"], geometry, "CT")


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_http_and_grpc_answer_the_local_masks_in_the_models_values(
    served, trained, dataset, transport: str
) -> None:
    """The NIfTI case posted as a file: the served label map equals ``predict --local``'s, its legend
    (``label_values``) is the model's label set and its volumes are per label name."""
    from organseg.serve.client import GrpcClient, HttpClient
    from organseg.serve.proto import segmentation_pb2 as pb

    http, grpc_target = served
    model_dir, case = trained
    path, _ = _case_files(dataset, case)
    image = read_volume_file(path)
    local = EnsemblePredictor(model_dir).predict(image, modality="CT")
    data = path.read_bytes()
    if transport == "http":
        fields = {"modality": "CT", "output_format": "nifti"}
        result = HttpClient(http).segment_bytes(data, path.name, fields)
        labels = _answer_labels(result, base64.b64decode(result["labels"]))
    else:
        request = pb.SegmentRequest(
            volume_file=data, filename=path.name, modality="CT", output_format="nifti"
        )
        result = GrpcClient(grpc_target).segment_request(request)
        labels = _answer_labels(result, result["labels"])
    assert result["label_values"] == {n: v + 1 for v, n in enumerate(ABDOMEN_LABELS)}
    assert labels.geometry.isclose(image.geometry)
    np.testing.assert_array_equal(labels.array, local.labels.array)
    assert len(set(np.unique(labels.array).tolist()) - {0}) >= LABELS_OVER_BAR
    assert sorted(result["volumes_ml"]) == sorted(ABDOMEN_LABELS)  # a proto map has no order
    assert result["volumes_ml"] == pytest.approx(local.volumes_ml, abs=1e-3)
    assert sorted(result["members"]) == ["attn", "dualtail"]


# -- DICOM-SEG -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dicom_case(
    trained, dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The training case as a CT DICOM series and its reference label map on the series' grid:
    ``(series folder, reference .nii.gz)``."""
    _, case = trained
    root = tmp_path_factory.mktemp("own-labels-dicom")
    folder, labels = write_abdomen_dicom(root / "series", SIZE, SLICES, SEED, index=_index(case))
    series = read_dicom_series(folder)
    # the series reads by ascending position, its files (and ``labels``) run head → feet: the same
    # voxels as the nnU-Net case, slices reversed
    nifti = np.asarray(read_volume_file(_case_files(dataset, case)[0]).array)
    np.testing.assert_array_equal(np.asarray(series.array), nifti[::-1])
    reference = write_volume_file(series.with_array(labels[::-1]), root / "reference.nii.gz")
    return folder, reference


def _dciodvfy_errors(path: Path) -> list[str]:
    from tests.io.test_dicomseg_labels import dciodvfy_errors

    if shutil.which("dciodvfy") is None:
        message = "dciodvfy not installed; install the Debian package dicom3tools"
        if os.environ.get("ORGANSEG_REQUIRE_DCIODVFY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return dciodvfy_errors(path)


def _assert_coded_segments(path: Path) -> None:
    """One segment per label of the set, in its order, coded from the set (SNOMED CT)."""
    seg = hd.seg.segread(path)
    label_set = abdomen_label_set()
    assert seg.number_of_segments == len(label_set) == 9
    for number, label in enumerate(label_set, start=1):
        item = seg.get_segment_description(number)
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodeValue, prop.CodingSchemeDesignator) == (label.code.type.value, "SCT")
        assert item.SegmentLabel == label.name.replace("_", " ").capitalize()


def _seg_labels(path: Path, reference: Path) -> np.ndarray:
    ref = read_volume_file(reference)
    return read_dicom_seg(path, ref.geometry, tuple(ref.shape), label_set=abdomen_label_set())


def test_dicom_seg_of_a_prediction_is_coded_valid_and_scores_as_the_nifti(
    trained, dataset, dicom_case, tmp_path, capsys
) -> None:
    model_dir, _ = trained
    folder, reference = dicom_case
    seg, nifti = tmp_path / "pred.dcm", tmp_path / "pred.nii.gz"
    for out in (seg, nifti):
        code, _, err = run_cli(capsys, "predict", folder, "--local", model_dir, "-o", out)
        assert code == 0, err
    _assert_coded_segments(seg)
    assert _dciodvfy_errors(seg) == []
    predicted = np.asarray(read_volume_file(nifti).array)
    np.testing.assert_array_equal(_seg_labels(seg, reference), predicted)
    from_seg = _scores(capsys, reference, seg, dataset, tmp_path / "seg.json")
    from_nifti = _scores(capsys, reference, nifti, dataset, tmp_path / "nifti.json")
    assert from_seg == from_nifti
    assert sum(1 for s in from_seg.values() if (s["dice"] or 0) > DICE_BAR) >= LABELS_OVER_BAR


def test_stow_rs_answers_the_same_coded_seg(served, trained, dicom_case, tmp_path) -> None:
    """``POST /v1/studies`` with the series: the DICOM-SEG the PACS route answers is coded from the
    model's label set (not CHAOS organ codes) and holds the local prediction."""
    from organseg.serve.stow import encode_multipart

    http, _ = served
    model_dir, _ = trained
    folder, reference = dicom_case
    body, content_type = encode_multipart([p.read_bytes() for p in sorted(folder.iterdir())])
    headers = {"content-type": content_type, "accept": "application/dicom"}
    response = httpx.post(f"{http}/v1/studies", content=body, headers=headers, timeout=300)
    assert response.status_code == 200, response.text
    path = tmp_path / "stow.dcm"
    pydicom.dcmread(io.BytesIO(response.content)).save_as(path)
    _assert_coded_segments(path)
    assert _dciodvfy_errors(path) == []
    local = EnsemblePredictor(model_dir).predict(read_dicom_series(folder))
    np.testing.assert_array_equal(_seg_labels(path, reference), local.labels.array)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_predict_over_http_and_grpc_writes_the_same_coded_seg(
    served, trained, dicom_case, tmp_path, capsys, transport: str
) -> None:
    """``predict --endpoint/--grpc -o x.dcm``: the client codes the SEG from the served model's label
    set (``GET /v1/models`` / ListModels), as ``--local`` does, not as CHAOS organ ids."""
    http, grpc_target = served
    model_dir, _ = trained
    folder, reference = dicom_case
    target = ["--endpoint", http] if transport == "http" else ["--grpc", grpc_target]
    local, remote = tmp_path / "local.dcm", tmp_path / f"{transport}.dcm"
    for out, where in ((local, ["--local", model_dir]), (remote, target)):
        code, _, err = run_cli(capsys, "predict", folder, *where, "-o", out)
        assert code == 0, err
    _assert_coded_segments(remote)
    np.testing.assert_array_equal(_seg_labels(remote, reference), _seg_labels(local, reference))


# -- overlays --------------------------------------------------------------------------------------
def _legend_colours(path: Path) -> set[tuple[int, int, int]]:
    """The label colours of the legend band below the slice of an overlay PNG."""
    from organseg.viz import image_box

    _, _, _, y1 = image_box(path)
    band = np.asarray(Image.open(path).convert("RGB"))[y1:].reshape(-1, 3)
    present = {tuple(int(c) for c in p) for p in np.unique(band, axis=0)}
    return {lb.colour for lb in abdomen_label_set()} & present


def _filled_labels(path: Path, alpha: float = 0.4) -> set[str]:
    """The labels whose colour, blended over some grey level as the overlay fills, the slice shows."""
    from organseg.viz import image_box

    x0, y0, x1, y1 = image_box(path)
    pixels = np.asarray(Image.open(path).convert("RGB"))[y0:y1, x0:x1].reshape(-1, 3)
    shown = {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)}
    grey = np.arange(256, dtype=np.float32)[:, None]
    filled = set()
    for label in abdomen_label_set():
        blends = np.rint(grey * (1 - alpha) + np.asarray(label.colour, np.float32) * alpha)
        if shown & {tuple(int(c) for c in b) for b in blends}:
            filled.add(label.name)
    return filled


def test_overlays_show_each_label_in_its_own_colour(trained, dataset, tmp_path, capsys) -> None:
    """Nine labels, nine distinct colours from the label set: the legend lists every label the model
    segments in its colour, the slices show the predicted ones filled; with the reference, every
    label is outlined too."""
    model_dir, case = trained
    image, reference = _case_files(dataset, case)
    out, overlay = tmp_path / "pred.nii.gz", tmp_path / "overlay"
    args = ["--local", model_dir, "--modality", "CT", "-o", out, "--overlay", overlay]
    code, _, err = run_cli(capsys, "predict", image, *args)
    assert code == 0, err
    colours = {lb.colour for lb in abdomen_label_set()}
    assert len(colours) == 9
    slices = sorted(overlay.glob("slice_*.png"))
    assert slices
    assert (overlay / "montage.png").is_file()
    for path in slices:
        assert _legend_colours(path) == colours
    filled = set().union(*(_filled_labels(p) for p in slices))
    predicted = {ABDOMEN_LABELS[v - 1] for v in np.unique(read_volume_file(out).array) if v}
    assert filled <= predicted
    assert len(filled) >= LABELS_OVER_BAR
    scored = tmp_path / "scored"
    code, _, err = run_cli(capsys, "evaluate", reference, out, "--labels", dataset, "--overlay", scored)  # fmt: skip
    assert code == 0, err
    outlined = set()
    for path in sorted(scored.glob("slice_*.png")):
        assert _legend_colours(path) == colours
        from organseg.viz import image_box

        x0, y0, x1, y1 = image_box(path)
        pixels = np.asarray(Image.open(path).convert("RGB"))[y0:y1, x0:x1].reshape(-1, 3)
        outlined |= {tuple(int(c) for c in p) for p in np.unique(pixels, axis=0)} & colours
    assert len(outlined) >= 8  # reference outlines in each label's full colour
