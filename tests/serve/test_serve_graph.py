"""The real Serve graph on loopback: routing, HTTP and gRPC, equality with local prediction, batching."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from organseg.ensemble.inputs import PredictInput
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.ensemble.version import model_version
from organseg.io import discover_cases, load_case, read_dicom_series
from organseg.io.volume import Modality
from organseg.serve.client import GrpcBackend, GrpcClient, HttpBackend, HttpClient

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _series(config, modality: Modality):
    from organseg.train.data import dataset_root

    ref = next(r for r in discover_cases(dataset_root(config)) if r.modality is modality)
    return ref, load_case(ref, with_label=False).image


def _assert_same_as_local(prediction, model_dir: Path, image, modality: Modality) -> None:
    local = EnsemblePredictor(model_dir).predict(image)
    assert prediction.modality is modality
    assert prediction.labels.shape == image.shape
    assert prediction.labels.geometry.isclose(image.geometry)
    np.testing.assert_array_equal(prediction.labels.array, local.labels.array)
    assert prediction.model_version == local.model_version == model_version(model_dir).id
    assert prediction.members == local.members == ["attn", "dualtail"]
    assert prediction.volumes_ml == pytest.approx(local.volumes_ml, abs=1e-3)
    assert prediction.uncertainty == pytest.approx(
        local.uncertainty, abs=1e-4
    )  # reports round to 4 places


@pytest.mark.parametrize("modality", [Modality.CT, Modality.MR_T2SPIR])
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_dicom_series_routed_by_header_and_equal_to_local(
    served, transport: str, modality: Modality
) -> None:
    http, grpc_target, config, model_dir = served
    ref, image = _series(config, modality)
    backend = HttpBackend(http, 120) if transport == "http" else GrpcBackend(grpc_target, 120)
    prediction = backend.predict(PredictInput(ref.case_id, image), None)
    assert prediction.modality_reason.startswith(
        f"DICOM Modality={'CT' if modality is Modality.CT else 'MR'}"
    )
    _assert_same_as_local(prediction, model_dir, image, modality)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_raw_volume_with_explicit_modality(served, transport: str) -> None:
    http, grpc_target, config, model_dir = served
    _, image = _series(config, Modality.MR_T2SPIR)
    bare = image.with_array(image.array)
    bare.meta = {}  # no header facts: the request field decides
    bare.modality = Modality.UNKNOWN
    client = HttpClient(http) if transport == "http" else GrpcClient(grpc_target)
    prediction = client.segment(bare, modality="MR-T2SPIR")
    assert prediction.modality_reason.startswith("requested explicitly")
    _assert_same_as_local(prediction, model_dir, image, Modality.MR_T2SPIR)


@pytest.mark.sample
def test_real_ct_case_routed_by_its_own_headers(served, chaos_ct_case: Path) -> None:
    http, _, _, _ = served
    image = read_dicom_series(chaos_ct_case / "DICOM_anon")
    prediction = HttpBackend(http, 300).predict(PredictInput("real", image), None)
    assert prediction.modality is Modality.CT
    assert (
        prediction.modality_reason == "DICOM Modality=CT"
    )  # although its ProtocolName says T2SPIR
    assert prediction.labels.shape == (78, 512, 512)
    assert prediction.labels.spacing == pytest.approx((0.7265625, 0.7265625, 2.0))
    assert prediction.labels.geometry.isclose(image.geometry)


def test_models_health_and_openapi(served) -> None:
    http, grpc_target, _, model_dir = served
    models = HttpClient(http).models()
    version = model_version(model_dir)
    assert models["model_version"] == version.id
    assert models["version"]["sha256"] == version.sha256
    # no token configured: the API is open, and every answer names its request id
    plain = httpx.get(f"{http}/v1/models", headers={"X-Request-ID": "probe-1"})
    assert plain.status_code == 200
    assert plain.headers["x-request-id"] == "probe-1"
    assert {e["modality"] for e in models["ensembles"]} == {"CT", "MR-T2SPIR"}
    assert [m["name"] for m in models["members"]] == ["dualtail", "attn"]
    assert models["organseg_version"]
    reply = GrpcClient(grpc_target).models()
    assert sorted(e.modality for e in reply.ensembles) == ["CT", "MR-T2SPIR"]
    assert reply.model_version == version.id
    # a CHAOS model directory (task 1) lists the CHAOS preset's labels it segments
    assert [(lb["name"], lb["value"]) for lb in models["label_set"]["labels"]] == [("liver", 1)]
    assert [(lb.name, lb.value, lb.code.value) for lb in reply.label_set.labels] == [
        ("liver", 1, "10200004")
    ]
    assert httpx.get(f"{http}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{http}/readyz", timeout=60)
    assert ready.status_code == 200
    assert ready.json()["ensembles"] == {"CT": "ok", "MR-T2SPIR": "ok"}
    from organseg.serve.proto import segmentation_pb2 as pb

    assert GrpcClient(grpc_target).call("Health", pb.HealthRequest()).status == "ok"
    spec = httpx.get(f"{http}/openapi.json").json()
    assert "/v1/segment" in spec["paths"]


def test_concurrent_requests_share_forward_passes(served) -> None:
    from ray import serve

    http, _, config, _ = served
    _, image = _series(config, Modality.CT)
    client = HttpClient(http)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: client.segment(image, output_format="raw"), range(6)))
    assert all(np.array_equal(r.labels.array, results[0].labels.array) for r in results)
    stats = (
        serve.get_deployment_handle("member-dualtail", app_name="organseg").stats.remote().result()
    )
    assert stats["max_requests_per_pass"] > 1  # @serve.batch merged chunks of different requests
    assert stats["forward_passes"] < stats["chunks"]


def test_cli_predict_over_http_and_grpc_with_report(served, tmp_path: Path) -> None:
    http, grpc_target, config, _ = served
    ref, _ = _series(config, Modality.CT)
    case_dir = ref.image_dir.parent
    for flag, target in (("--endpoint", http), ("--grpc", grpc_target)):
        out, report = tmp_path / f"{flag[2:]}.nii.gz", tmp_path / f"{flag[2:]}.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "organseg.cli",
                "predict",
                str(case_dir),
                "-o",
                str(out),
                flag,
                target,
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert out.is_file()
        meta = json.loads(report.read_text())
        assert meta["modality"] == "CT"
        assert meta["modality_reason"] == "DICOM Modality=CT"
        assert set(meta["members"]) == {"dualtail", "attn"}
        assert set(meta["volumes_ml"]) == {"liver"}
        assert "liver" in meta["uncertainty"]
        assert meta["timings_s"]["router_total"] > 0
        assert meta["model_version"] == model_version(served[3]).id


def test_cli_predict_dataset_over_grpc_skips_what_is_not_served(served, tmp_path: Path) -> None:
    """A whole dataset through the served graph: the series it routes go to the CHAOS layout, the T1
    phases (no member takes them) are skipped unsent and listed, exit code 1."""
    from organseg.train.data import dataset_root

    _, grpc_target, config, _ = served
    out, report = tmp_path / "preds", tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "organseg.cli", "predict", str(dataset_root(config)), "-o", str(out),
         "--grpc", grpc_target, "--format", "nifti", "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz"))
    patients = (1, 2, 3, 4)  # the session's tiny experiment: 4 CT and 4 MR patients
    assert written == sorted(
        [*(f"CT/{n}.nii.gz" for n in patients), *(f"MR/{n}/T2SPIR.nii.gz" for n in patients)]
    )
    meta = json.loads(report.read_text())
    assert {s["case"] for s in meta["skipped"]} == {
        f"MR/{n}/T1DUAL-{p}" for n in patients for p in ("in", "out")
    }
    assert "the ensemble serves CT, MR-T2SPIR" in meta["skipped"][0]["reason"]
    assert meta["model"]["endpoint"] == f"gRPC {grpc_target}"
    assert meta["model"]["name"] == config.name
