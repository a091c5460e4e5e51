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
from organseg.serve.http_schema import SEGMENT_FORM, SegmentResponse
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
