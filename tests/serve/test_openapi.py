"""The HTTP API describes itself: OpenAPI for POST /v1/segment agrees with the gRPC proto and with the live app.

The static part compares the multipart form and the 200 model with ``SegmentRequest``/``RawVolume`` and
``SegmentResponse``. The live part deploys a one-member CT model over loopback and lets schemathesis
fuzz every documented operation from ``/openapi.json`` (bounded, derandomized): no server error, no
status code or body the document does not describe; then schema-valid, meaningful requests (raw voxels,
a NIfTI file) are accepted with a 200 whose body matches the documented model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.modalities import Modality
from organseg.serve.http_schema import (
    SEGMENT_FORM,
    CodedConcept,
    EnsembleInfo,
    LabelInfo,
    LabelSetInfo,
    MemberInfo,
    ModelsResponse,
    SegmentResponse,
)
from organseg.serve.proto import segmentation_pb2 as pb
from organseg.serve.stow import encode_multipart
from organseg.serve.wire import OUTPUT_FORMATS, RAW_DTYPES
from tests.conftest import loopback_serve_config, serving
from tests.serve.conftest import GRPC_PORT, HTTP_PORT

FUZZ_EXAMPLES = 40


def _proto_fields(message) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


def test_http_form_and_grpc_request_carry_the_same_fields() -> None:
    raw = _proto_fields(pb.RawVolume) - {"data"}
    request = _proto_fields(pb.SegmentRequest) - {"volume_file", "dicom_zip", "raw", "filename"}
    # file carries volume_file/dicom_zip/raw.data, its part's file name carries filename
    assert set(SEGMENT_FORM["properties"]) == {"file"} | raw | request
    properties = SEGMENT_FORM["properties"]
    assert properties["output_format"]["enum"] == list(OUTPUT_FORMATS)
    assert properties["dtype"]["enum"] == list(RAW_DTYPES)
    assert properties["modality"]["enum"] == [m.value for m in Modality.known()]


def test_http_answer_and_grpc_answer_carry_the_same_fields() -> None:
    assert set(SegmentResponse.model_fields) == _proto_fields(pb.SegmentResponse)


def test_http_models_answer_and_grpc_list_models_carry_the_same_fields() -> None:
    # HTTP adds the full version record and the modality classifier's status
    assert set(ModelsResponse.model_fields) - {"version", "modality_classifier"} == _proto_fields(
        pb.ListModelsResponse
    )
    for model, message in [
        (EnsembleInfo, pb.EnsembleInfo),
        (MemberInfo, pb.MemberInfo),
        (LabelSetInfo, pb.LabelSetInfo),
        (LabelInfo, pb.LabelInfo),
        (CodedConcept, pb.CodedConcept),
    ]:
        assert set(model.model_fields) == _proto_fields(message), model.__name__


def test_openapi_documents_the_models_answer() -> None:
    from organseg.serve.router import api

    document = api.openapi()
    answer = document["paths"]["/v1/models"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ModelsResponse")
    label_set = document["components"]["schemas"]["ModelsResponse"]["properties"]["label_set"]
    assert label_set["$ref"].endswith("/LabelSetInfo")


def test_openapi_documents_the_stow_operation() -> None:
    from organseg.serve.router import api

    operation = api.openapi()["paths"]["/v1/studies"]["post"]
    body = operation["requestBody"]["content"]["multipart/related"]
    assert body["schema"]["properties"]["instances"]["items"]["format"] == "binary"
    assert body["encoding"]["instances"]["contentType"] == "application/dicom"
    for code in set(operation["responses"]) - {"200"}:
        schema = operation["responses"][code]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorBody")


def test_openapi_documents_the_segment_operation() -> None:
    from organseg.serve.router import api

    operation = api.openapi()["paths"]["/v1/segment"]["post"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    codes = set(operation["responses"])
    assert {"200", "400", "413", "422"} <= codes
    for code in codes - {"200"}:
        schema = operation["responses"][code]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorBody")


@pytest.fixture(scope="module")
def live_api(ray_cluster: str, liver_everywhere_model):
    schema = loopback_serve_config(
        liver_everywhere_model, HTTP_PORT, GRPC_PORT, max_voxels=2_000_000
    )
    with serving(schema):
        yield f"http://127.0.0.1:{HTTP_PORT}"


@pytest.mark.ray
@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(live_api: str) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    @schemathesis.serializer("multipart/related")
    def stow_body(ctx, value) -> bytes:  # STOW-RS: each instance one part (the route wants DICOM)
        parts = value.get("instances") if isinstance(value, dict) else None
        return encode_multipart(
            [p if isinstance(p, bytes) else str(p).encode() for p in parts or []]
        )[0]

    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    seen: set[int] = set()
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(
            max_examples=FUZZ_EXAMPLES if op.method.upper() == "POST" else 3,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def fuzz(case) -> None:
            response = case.call_and_validate(base_url=live_api, checks=checks, timeout=60)
            seen.add(response.status_code)

        fuzz()
    assert 400 in seen, f"fuzzing never reached a refusal: {sorted(seen)}"


def _nifti(array: np.ndarray, folder: Path) -> bytes:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    sitk.WriteImage(image, str(folder / "scan.nii.gz"))
    return (folder / "scan.nii.gz").read_bytes()


@pytest.mark.ray
@pytest.mark.slow
def test_valid_requests_are_accepted_as_documented(live_api: str, tmp_path: Path) -> None:
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    op = schema["/v1/segment"]["POST"]
    volume = np.full((4, 48, 48), -100, dtype=np.int16)
    bodies = [
        {"file": volume.tobytes(), "shape": "4,48,48", "dtype": "int16", "modality": "CT",
         "spacing": "1.5,1.5,3", "output_format": "raw"},
        {"file": _nifti(volume, tmp_path), "modality": "CT"},
    ]  # fmt: skip
    checks = [
        not_a_server_error,
        status_code_conformance,
        response_schema_conformance,
        positive_data_acceptance,
    ]
    for body in bodies:
        case = op.Case(body=body, media_type="multipart/form-data")
        response = case.call_and_validate(base_url=live_api, checks=checks, timeout=120)
        assert response.status_code == 200, response.text
        answer = SegmentResponse.model_validate(response.json())
        assert answer.shape == [4, 48, 48]
        assert answer.modality == "CT"
        assert answer.label_values == {"liver": 1}  # the legend of the label map


CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "missing_required_header,unsupported_method,form_fields_are_never_refused"
)


def test_the_form_check_recognises_the_servers_own_complaints() -> None:
    """The coverage run's custom check (openapi_form_check.py) knows the messages the server gives
    for a field's form, taken from the real code, and not those about a file's content."""
    import importlib.util

    from organseg.errors import DataError
    from organseg.serve.wire import WireLimits, decode_raw

    spec = importlib.util.spec_from_file_location(
        "openapi_form_check", Path(__file__).with_name("openapi_form_check.py")
    )
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)  # type: ignore[union-attr]
    limits = WireLimits()
    form_errors = []
    for args in [
        (b"x", "int16", [0, 0, 0], None, None, None, None),
        (b"x", "", [1, 1, 1], None, None, None, None),
        (b"xx", "int16", [1, 1, 1], [0.0, 1.0, 1.0], None, None, None),
        (b"xx", "int16", [1, 1, 1], None, [1e9, 0.0, 0.0], None, None),
        (b"xx", "int16", [1, 1, 1], None, None, [1.0], None),
        (b"xx", "int16", [1, 1, 1], None, None, None, "lz4"),
    ]:
        with pytest.raises(DataError) as refused:
            decode_raw(*args, limits)
        form_errors.append(str(refused.value))
    for message in form_errors:
        assert hooks.FORM_COMPLAINTS.search(message), message
    with pytest.raises(DataError) as content:
        decode_raw(b"xyz", "int16", [1, 1, 1], None, None, None, None, limits)
    assert not hooks.FORM_COMPLAINTS.search(str(content.value)), str(content.value)


@pytest.mark.ray
@pytest.mark.slow
def test_schemathesis_coverage_phase_finds_no_schema_valid_form_refused(
    live_api: str, tmp_path: Path
) -> None:
    """schemathesis's coverage phase (boundary values of every field: empty, shortest, longest,
    each enum value, each pattern's edge) against the live app: no server error, no undocumented
    answer, every schema-invalid request refused, and no schema-valid request refused for a
    field's form (a generated file is refused for its content, which the schema cannot promise)."""
    import os
    import subprocess
    import sys

    hooks = Path(__file__).with_name("openapi_form_check.py")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run", f"{live_api}/openapi.json",
         "--phases", "coverage", "--generation-deterministic", "--workers", "1",
         "--checks", CHECKS, "--request-timeout", "60"],
        cwd=tmp_path, capture_output=True, text=True, timeout=500, check=False,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": str(hooks)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "Coverage" in done.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_a_models_label_set_is_listed_over_http_and_grpc_and_names_its_answers(
    live_api: str, liver_everywhere_model: Path, amos8_model: Path
) -> None:
    """Switched in place to a model of AMOS's first eight labels, GET /v1/models and ListModels list
    them with their values and codes; a CHAOS PNG answer, which has no grey level for them, is
    refused before anything is predicted. The CHAOS model lists (and its answers name) its liver."""
    import httpx

    from organseg.ensemble.describe import describe_model_dir
    from organseg.serve.client import GrpcClient, HttpClient, ServiceError
    from tests.conftest import AMOS8_SHOWN, label_rows
    from tests.serve.conftest import switch_to

    target = f"127.0.0.1:{GRPC_PORT}"
    volume = np.full((4, 48, 48), -100, dtype=np.int16)
    raw = {"shape": "4,48,48", "dtype": "int16", "modality": "CT", "spacing": "1.5,1.5,3"}
    answer = GrpcClient(target).segment_request(
        pb.SegmentRequest(
            raw=pb.RawVolume(data=volume.tobytes(), dtype="int16", shape=[4, 48, 48]),
            modality="CT",
            output_format="raw",
        )
    )
    assert answer["label_values"] == {"liver": 1}

    def schema(model_dir: Path) -> dict:
        return loopback_serve_config(model_dir, HTTP_PORT, GRPC_PORT, max_voxels=2_000_000)

    try:
        models = switch_to(live_api, schema(amos8_model), amos8_model)
        ModelsResponse.model_validate(models)
        assert models["label_set"] == describe_model_dir(amos8_model)["label_set"]
        assert models["label_set"]["name"] == "amos-8"
        assert label_rows(models["label_set"]) == AMOS8_SHOWN
        reply = GrpcClient(target).models().label_set
        assert reply.name == "amos-8"
        assert not reply.HasField("ignore")
        assert [
            (lb.name, lb.value, lb.code.value, lb.code.meaning,
             lb.laterality.meaning if lb.HasField("laterality") else None, lb.largest_component)
            for lb in reply.labels
        ] == AMOS8_SHOWN  # fmt: skip
        assert all(lb.code.scheme == "SCT" for lb in reply.labels)
        assert [list(lb.colour) for lb in reply.labels] == [
            lb["colour"] for lb in models["label_set"]["labels"]
        ]
        png = {**raw, "output_format": "png-zip"}
        with pytest.raises(ServiceError) as over_http:
            HttpClient(live_api).segment_bytes(volume.tobytes(), "volume.raw", png)
        with pytest.raises(ServiceError, match="INVALID_ARGUMENT") as over_grpc:
            GrpcClient(target).segment_request(
                pb.SegmentRequest(
                    raw=pb.RawVolume(data=volume.tobytes(), dtype="int16", shape=[4, 48, 48]),
                    modality="CT",
                    output_format="png-zip",
                )
            )
        assert "400" in str(over_http.value)
        for caught in (over_http, over_grpc):
            message = str(caught.value)
            assert "no grey level for spleen=1, right kidney=2" in message
            assert "liver=6" in message
            assert "ask for nifti or raw" in message
    finally:
        restored = switch_to(live_api, schema(liver_everywhere_model), liver_everywhere_model)
    assert [(lb["name"], lb["value"]) for lb in restored["label_set"]["labels"]] == [("liver", 1)]
    assert httpx.get(f"{live_api}/v1/models").json() == restored
