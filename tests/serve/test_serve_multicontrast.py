"""The multi-contrast MR cascade served: T1 in-phase, out-of-phase and T2-SPIR travel together over
HTTP and gRPC (one zip of the patient's DICOM series, or named parts) and the answer equals local
prediction (registration included); the ensemble deployment takes them as arguments too. Requests
missing a series, doubling one or mixing patients are refused naming what is wrong, and the next good
request is answered."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from organseg.ensemble.inputs import plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.errors import DataError, OrgansegError
from organseg.io import read_any
from tests.conftest import MR_SERIES, loopback_serve_config, mr_series_folder, serving, zip_bytes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP_PORT, GRPC_PORT = 18347, 19347


@pytest.fixture(scope="module")
def served_mc(ray_cluster, multicontrast_model: tuple[Path, Path]):
    """The 3-channel cascade trained for two epochs and served on loopback:
    ``(http url, grpc target, model dir, dataset root)``."""
    model_dir, data_root = multicontrast_model
    with serving(loopback_serve_config(model_dir, HTTP_PORT, GRPC_PORT)):
        yield f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}", model_dir, data_root


def _case(data_root: Path, case: int) -> Path:
    return data_root / "Train_Sets" / "MR" / str(case)


def _files(data_root: Path, case: int, kind: str, prefix: str) -> list[tuple[str, bytes]]:
    folder = mr_series_folder(data_root, case, kind)
    return [(f"{prefix}/{p.name}", p.read_bytes()) for p in sorted(folder.glob("*.dcm"))]


def _exit_code(main, args: list[str]) -> int | None:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code  # type: ignore[return-value]
    return None


def test_ensemble_deployment_takes_the_three_series(served_mc) -> None:
    from ray import serve

    from organseg.serve.app import ensemble_deployment_name

    _, _, model_dir, data_root = served_mc
    item = plan_inputs(_case(data_root, 1), "MR-T1-in", True, True)[0].load()
    local = EnsemblePredictor(model_dir).predict(item.image, "MR-T1-in", item.partner, item.t2)
    handle = serve.get_deployment_handle(ensemble_deployment_name("MR-T1-in"), app_name="organseg")
    served = handle.segment.remote(item.image, "MR-T1-in", item.partner, item.t2).result()
    np.testing.assert_array_equal(served.labels.array, local.labels.array)
    assert served.members == ["cascade3d-mc"]
    assert served.registration == local.registration
    with pytest.raises(DataError, match="T2-SPIR series is missing"):
        handle.segment.remote(item.image, "MR-T1-in", item.partner).result()


def test_predict_command_sends_a_case_folder_over_http_and_grpc(
    served_mc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`organseg predict` on a CHAOS MR case folder: --endpoint and --grpc send T1 in, T1 out and
    T2-SPIR together and write the mask --local writes (file order restored)."""
    import json

    from organseg.cli import main

    http, grpc_target, model_dir, data_root = served_mc
    case = str(_case(data_root, 2))
    masks, reports = {}, {}
    for name, how in (
        ("local", ["--local", str(model_dir), "--device", "cpu"]),
        ("http", ["--endpoint", http]),
        ("grpc", ["--grpc", grpc_target]),
    ):
        out, report = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}.json"
        args = ["predict", case, "-o", str(out), "--modality", "MR-T1-in", "--report", str(report)]
        code = _exit_code(main, [*args, *how])
        assert code in (0, None), capsys.readouterr()
        masks[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        reports[name] = json.loads(report.read_text())
    assert masks["local"].any()
    for name in ("http", "grpc"):
        np.testing.assert_array_equal(masks[name], masks["local"])
        assert reports[name]["registration"] == reports["local"]["registration"]
        assert reports[name]["volumes_ml"] == reports["local"]["volumes_ml"]
    assert set(reports["http"]["registration"]) >= {
        "rotation_deg",
        "translation_mm",
        "mutual_information",
    }


def test_named_parts_and_the_answer_describe_every_series(served_mc, tmp_path: Path) -> None:
    """Headerless volumes as named parts (HTTP: NIfTI files; gRPC: raw voxels) equal local
    prediction on the same volumes; the answer says how each series was used."""
    from organseg.serve.client import GrpcClient

    http, grpc_target, model_dir, data_root = served_mc
    item = plan_inputs(_case(data_root, 1), "MR-T1-in", True, True)[0].load()
    paths = {}
    for name, volume in (("in", item.image), ("out", item.partner), ("t2", item.t2)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(volume.to_sitk(), str(paths[name]))
    volumes = {n: read_any(p) for n, p in paths.items()}  # NIfTI records no modality
    local = EnsemblePredictor(model_dir).predict(
        volumes["in"], "MR-T1-in", volumes["out"], volumes["t2"]
    )
    files = {
        "file": ("a.nii.gz", paths["in"].read_bytes()),
        "out_phase": ("b.nii.gz", paths["out"].read_bytes()),
        "t2": ("c.nii.gz", paths["t2"].read_bytes()),
    }
    form = {"modality": "MR-T1-in", "output_format": "raw"}
    answer = httpx.post(f"{http}/v1/segment", files=files, data=form, timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    import base64
    import zlib

    labels = np.frombuffer(zlib.decompress(base64.b64decode(body["labels"])), np.uint8)
    np.testing.assert_array_equal(labels.reshape(body["shape"]), local.labels.array)
    assert [s["role"] for s in body["series"]] == ["image", "out_phase", "t2"]
    assert body["series"][1]["modality_reason"].startswith("requested explicitly")
    assert body["registration"]["rotation_deg"] == local.registration["rotation_deg"]
    assert "in-phase" in body["answers_for"]
    assert "a.nii" not in answer.text

    served = GrpcClient(grpc_target).segment(
        volumes["in"], "MR-T1-in", partner=volumes["out"], t2=volumes["t2"]
    )
    np.testing.assert_array_equal(served.labels.array, local.labels.array)
    assert served.registration == local.registration


def test_refusals_name_what_is_wrong_and_the_next_request_is_answered(
    served_mc, tmp_path: Path
) -> None:
    from organseg.serve.client import NO_RETRY, GrpcClient, HttpClient

    http, grpc_target, _, data_root = served_mc
    client = HttpClient(http, retry=NO_RETRY)
    grpc = GrpcClient(grpc_target, retry=NO_RETRY)
    patient = {k: _files(data_root, 1, k, f"DOE^JANE/{k}") for k in MR_SERIES}
    good = zip_bytes(patient["in"] + patient["out"] + patient["t2"])

    def twin(entries):
        out = []
        for name, data in entries:
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.SeriesInstanceUID += ".9"
            ds.SOPInstanceUID += ".9"
            ds.SeriesNumber = 99
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            out.append((name.replace("/t2/", "/t2-copy/"), buffer.getvalue()))
        return out

    other = _files(data_root, 2, "t2", "SMITH^JOHN/t2")
    study_uids = {pydicom.dcmread(io.BytesIO(d)).StudyInstanceUID for _, d in other + patient["t2"]}
    bad = {
        "missing T2": (
            zip_bytes(patient["in"] + patient["out"]),
            r"422.*not the T2-SPIR series.*'t2'",
        ),
        "missing out-phase": (
            zip_bytes(patient["in"] + patient["t2"]),
            r"422.*not the T1 out-of-phase series.*out_phase",
        ),
        "two T2": (
            zip_bytes(patient["in"] + patient["out"] + patient["t2"] + twin(patient["t2"])),
            r"400.*two T2-SPIR series: SeriesNumber \d+ .* and SeriesNumber 99",
        ),
        "mixed": (
            zip_bytes(patient["in"] + patient["out"] + other),
            r"400.*not from one study: StudyInstanceUID differs",
        ),
    }
    for what, (data, expected) in bad.items():
        with pytest.raises(OrgansegError, match=expected) as refused:
            client.segment_bytes(data, "study.zip", {"output_format": "raw"})
        message = str(refused.value)
        assert "DOE" not in message, what
        assert "SMITH" not in message, what
        assert not any(uid in message for uid in study_uids), what
        answer = client.segment_bytes(good, "study.zip", {"output_format": "raw"})
        assert answer["modality"] == "MR-T1-in", what

    from organseg.serve.proto import segmentation_pb2 as pb

    with pytest.raises(OrgansegError, match=r"INVALID_ARGUMENT.*not the T2-SPIR series"):
        grpc.segment_request(pb.SegmentRequest(dicom_zip=bad["missing T2"][0], output_format="raw"))
    answer = grpc.segment_request(pb.SegmentRequest(dicom_zip=good, output_format="raw"))
    assert [s["role"] for s in answer["series"]] == ["image", "out_phase", "t2"]
    assert answer["registration"]["mutual_information"] > 0
