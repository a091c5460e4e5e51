"""Every kind of bad request gets a 4xx / matching gRPC status naming the problem; the next good one works."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import zipfile
import zlib
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from organseg.io import discover_cases
from organseg.io.volume import Modality
from organseg.serve.client import GrpcClient, HttpClient, ServiceError, zip_dicom_series

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _ct_folder(config) -> Path:
    from organseg.train.data import dataset_root

    return next(
        r for r in discover_cases(dataset_root(config)) if r.modality is Modality.CT
    ).image_dir


def _post(
    http: str, files=None, data=None, content: bytes | None = None, headers=None
) -> httpx.Response:
    if content is not None:
        return httpx.post(f"{http}/v1/segment", content=content, headers=headers or {}, timeout=120)
    return httpx.post(f"{http}/v1/segment", files=files, data=data, timeout=120)


def _bad_requests(config, tmp_path: Path):
    """(name, request kwargs, expected status, message fragment)."""
    ct = _ct_folder(config)
    good_zip = zip_dicom_series(ct)

    truncated = tmp_path / "truncated"
    shutil.copytree(ct, truncated)
    victim = sorted(truncated.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:600])

    other = tmp_path / "two"
    shutil.copytree(ct, other)
    for f in ct.iterdir():  # a second series: same pixels, new SeriesInstanceUID
        import pydicom

        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
        ds.save_as(other / f"x-{f.name}")

    corrupt_nii = gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 100)
    raw = np.zeros((4, 8, 8), np.int16).tobytes()
    return [
        ("empty body", {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "empty"),
        ("no file field", {"data": {"modality": "CT"}, "files": {"other": ("x", b"1")}}, 400, "'file'"),
        ("corrupt NIfTI", {"files": {"file": ("scan.nii.gz", corrupt_nii)}}, 400, "NIfTI"),
        ("not a volume", {"files": {"file": ("notes.txt", b"hello world")}}, 400, "not a NIfTI"),
        ("not a zip", {"files": {"file": ("series.zip", b"PK\x03\x04garbage")}}, 400, "zip"),
        ("truncated DICOM", {"files": {"file": ("s.zip", zip_dicom_series(truncated))}}, 400, "truncated"),
        ("two series", {"files": {"file": ("s.zip", zip_dicom_series(other))}}, 400, "2 DICOM series"),
        ("wrong byte count", {"files": {"file": ("v.raw", raw[:-2])}, "data": {"shape": "4,8,8", "dtype": "int16",
                                                                                 "modality": "CT"}}, 400, "bytes"),
        ("absurd shape", {"files": {"file": ("v.raw", raw)}, "data": {"shape": "4,-8,8", "dtype": "int16"}}, 400,
         "positive"),
        ("over the size limit", {"files": {"file": ("v.raw", raw)}, "data": {"shape": "4000,4000,4000",
                                                                           "dtype": "int16"}}, 413, "limit"),
        ("unknown modality", {"files": {"file": ("v.raw", raw)}, "data": {"shape": "4,8,8", "dtype": "int16",
                                                                          "modality": "PET"}}, 400, "modality"),
        ("no modality at all", {"files": {"file": ("v.raw", raw)}, "data": {"shape": "4,8,8", "dtype": "int16"}},
         422, "cannot tell the modality"),
        ("contradicting header", {"files": {"file": ("s.zip", good_zip)}, "data": {"modality": "MR-T2SPIR"}}, 422,
         "contradicts"),
        ("modality without ensemble", {"files": {"file": ("v.raw", raw)}, "data": {"shape": "4,8,8", "dtype": "int16",
                                                                                   "modality": "MR-T1-out"}}, 422,
         "no ensemble"),
        ("bad output format", {"files": {"file": ("s.zip", good_zip)}, "data": {"output_format": "gif"}}, 400,
         "output_format"),
    ]  # fmt: skip


def test_http_bad_requests_then_a_good_one(served, tmp_path: Path) -> None:
    http, _, config, _ = served
    for name, kwargs, status, fragment in _bad_requests(config, tmp_path):
        response = _post(http, **kwargs)
        assert response.status_code == status, (name, response.text)
        assert fragment.lower() in response.json()["error"].lower(), (name, response.text)
    good = HttpClient(http).segment_bytes(zip_dicom_series(_ct_folder(config)), "series.zip")
    assert good["modality"] == "CT"
    assert httpx.get(f"{http}/readyz", timeout=60).status_code == 200


def test_grpc_bad_requests_then_a_good_one(served) -> None:
    from organseg.serve.proto import segmentation_pb2 as pb

    _, target, config, _ = served
    client = GrpcClient(target)
    raw = np.zeros((4, 8, 8), np.int16).tobytes()
    cases = [
        (pb.SegmentRequest(), grpc.StatusCode.INVALID_ARGUMENT, "empty request"),
        (pb.SegmentRequest(volume_file=b"\x1f\x8bnot really"), grpc.StatusCode.INVALID_ARGUMENT, "gzip"),
        (pb.SegmentRequest(dicom_zip=b"nope"), grpc.StatusCode.INVALID_ARGUMENT, "zip"),
        (pb.SegmentRequest(raw=pb.RawVolume(data=raw[:10], dtype="int16", shape=[4, 8, 8]), modality="CT"),
         grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
        (pb.SegmentRequest(raw=pb.RawVolume(data=zlib.compress(raw), dtype="int16", shape=[4, 8, 8],
                                            compression="zlib"), modality="XR"), grpc.StatusCode.INVALID_ARGUMENT,
         "modality"),
        (pb.SegmentRequest(raw=pb.RawVolume(data=raw, dtype="int16", shape=[9000, 9000, 9000]), modality="CT"),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"),
        (pb.SegmentRequest(raw=pb.RawVolume(data=raw, dtype="complex64", shape=[4, 8, 8]), modality="CT"),
         grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
        (pb.SegmentRequest(raw=pb.RawVolume(data=raw, dtype="int16", shape=[4, 8, 8]), modality="CT",
                           channels={"DOE^JANE.nii": pb.SeriesPart(volume_file=b"x")}),
         grpc.StatusCode.INVALID_ARGUMENT, "1 'channels' entr(y/ies)"),
    ]  # fmt: skip
    for request, code, fragment in cases:
        with pytest.raises(ServiceError, match=code.name) as caught:
            client.call("Segment", request)
        assert fragment.lower() in str(caught.value).lower()
        assert "DOE" not in str(caught.value)
    good = client.segment_request(pb.SegmentRequest(dicom_zip=zip_dicom_series(_ct_folder(config))))
    assert good["modality"] == "CT"
    assert len(good["labels"]) > 0


def test_png_zip_output(served) -> None:
    http, _, config, _ = served
    import base64

    result = HttpClient(http).segment_bytes(
        zip_dicom_series(_ct_folder(config)), "series.zip", {"output_format": "png-zip"}
    )
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(result["labels"])))
    names = archive.namelist()
    assert names[0] == "results001.png"
    assert len(names) == result["shape"][0]


# -- slice order, broken series and hostile volumes (HTTP and gRPC alike) ---------------------------------


def _zip_entries(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _series_variants(config) -> dict[str, bytes]:
    """The CT series as zips: file-name order, SOP-UID names, reversed names, shuffled names."""
    import pydicom

    files = sorted(_ct_folder(config).iterdir())
    data = [f.read_bytes() for f in files]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    perm = np.random.default_rng(5).permutation(len(files))
    n = len(files)
    return {
        "ordered": zip_dicom_series(_ct_folder(config)),
        "uid-named": _zip_entries([(f"{u}.dcm", d) for u, d in zip(uids, data, strict=True)]),
        "reversed": _zip_entries([(f"IM{n - k:04d}", d) for k, d in enumerate(data)]),
        "shuffled": _zip_entries([(f"s{perm[k]}", data[k]) for k in range(n)][::-1]),
    }


def _send(
    transport: str, http: str, target: str, payload: bytes, fields: dict | None = None
) -> dict:
    from organseg.serve.proto import segmentation_pb2 as pb

    fields = {"output_format": "raw", **(fields or {})}
    if transport == "http":
        return HttpClient(http).segment_bytes(payload, "upload.bin", fields)
    return GrpcClient(target).segment_request(pb.SegmentRequest(dicom_zip=payload, **fields))


def _labels(result: dict, transport: str) -> np.ndarray:
    import base64

    data = base64.b64decode(result["labels"]) if transport == "http" else result["labels"]
    return np.frombuffer(zlib.decompress(data), np.uint8).reshape(result["shape"])


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_file_names_and_order_do_not_change_the_answer(served, transport: str) -> None:
    http, target, config, _ = served
    results = {
        name: _send(transport, http, target, payload)
        for name, payload in _series_variants(config).items()
    }
    reference = results["ordered"]
    for name, result in results.items():
        np.testing.assert_array_equal(
            _labels(result, transport), _labels(reference, transport), name
        )
        assert result["volumes_ml"] == reference["volumes_ml"], name
        for key in ("spacing", "origin", "direction", "shape"):
            assert result[key] == pytest.approx(reference[key]), (name, key)
    assert reference["direction"][8] == pytest.approx(1.0)  # stacked up the slice normal


def _hostile(config, tmp_path: Path) -> list[tuple[str, str, bytes, dict, int, str]]:
    """(name, kind, payload, raw fields, HTTP status, message fragment); kind: zip | file | raw."""
    import pydicom
    import SimpleITK as sitk

    files = sorted(_ct_folder(config).iterdir())
    data = [f.read_bytes() for f in files]
    other = pydicom.dcmread(files[3])
    other.InstanceNumber = 77
    other.PixelData = (other.pixel_array // 2).astype(other.pixel_array.dtype).tobytes()
    second = io.BytesIO()
    other.save_as(second, enforce_file_format=True)
    tilted = pydicom.dcmread(files[2])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    odd = io.BytesIO()
    tilted.save_as(odd, enforce_file_format=True)

    nii = tmp_path / "v.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 32, 32), np.int16)), str(nii))
    whole = nii.read_bytes()
    lying = bytearray(whole[:352])
    lying[42:48] = np.array([256, 256, 256], "<i2").tobytes()
    nan = np.zeros((4, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    raw = np.zeros((4, 8, 8), np.int16).tobytes()
    entries = [(f"f{k}", d) for k, d in enumerate(data)]
    return [
        ("missing slice", "zip", _zip_entries(entries[:5] + entries[6:]), {}, 400, "missing"),
        ("two images at one position", "zip", _zip_entries([*entries, ("x", second.getvalue())]), {}, 400,
         "same position"),
        ("mixed orientation", "zip", _zip_entries([*entries[:2], ("x", odd.getvalue()), *entries[3:]]), {}, 400,
         "mixed orientations"),
        ("unsafe member name", "zip", _zip_entries([*entries, ("../../etc/x", data[0])]), {}, 400, "unsafe name"),
        ("truncated NIfTI", "file", whole[: len(whole) - 300], {}, 400, "truncated"),
        ("lying NIfTI header", "file", bytes(lying) + b"\0" * 1024, {}, 400, "header claims [256, 256, 256]"),
        ("NaN voxels", "raw", nan.tobytes(), {"dtype": "float32", "shape": [4, 8, 8], "modality": "CT"}, 400,
         "NaN"),
        ("spacing 1e200", "raw", raw, {"dtype": "int16", "shape": [4, 8, 8], "spacing": [1, 1, 1e200],
                                       "modality": "CT"}, 400, "spacing"),
        ("all-zero direction", "raw", raw, {"dtype": "int16", "shape": [4, 8, 8], "direction": [0] * 9,
                                            "modality": "CT"}, 400, "orthonormal"),
    ]  # fmt: skip


def test_http_hostile_inputs_are_4xx_naming_the_problem(served, tmp_path: Path) -> None:
    http, _, config, _ = served
    for name, _kind, payload, fields, status, fragment in _hostile(config, tmp_path):
        form = {
            k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in fields.items()
        }
        response = _post(http, files={"file": ("DOE^JANE.bin", payload)}, data=form)
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert fragment.lower() in body["error"].lower(), (name, body)
        assert "DOE" not in body["error"], (name, body)  # no uploaded names, no server paths
        assert "/tmp" not in body["error"], (name, body)
    # form-level problems: no boundary, a shape of inf, a chunked body past the byte limit
    response = _post(http, content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400
    assert "boundary" in response.json()["error"]
    response = _post(
        http, files={"file": ("v", b"\0" * 8)}, data={"shape": "inf,2,2", "dtype": "int16"}
    )
    assert response.status_code == 400
    assert "whole numbers" in response.json()["error"]

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for _ in range(129):
            yield b"\0" * (1 << 20)

    response = httpx.post(f"{http}/v1/segment", content=chunks(), timeout=120,
                          headers={"content-type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert response.status_code == 413, response.text
    assert "stopped reading" in response.json()["error"]
    good = HttpClient(http).segment_bytes(zip_dicom_series(_ct_folder(config)), "series.zip")
    assert good["modality"] == "CT"


def test_grpc_hostile_inputs_are_refused_naming_the_problem(served, tmp_path: Path) -> None:
    from organseg.serve.proto import segmentation_pb2 as pb

    _, target, config, _ = served
    client = GrpcClient(target)
    for name, kind, payload, fields, _status, fragment in _hostile(config, tmp_path):
        if kind == "zip":
            request = pb.SegmentRequest(dicom_zip=payload)
        elif kind == "file":
            request = pb.SegmentRequest(volume_file=payload, filename="DOE^JANE.nii")
        else:
            modality = fields.pop("modality")
            request = pb.SegmentRequest(raw=pb.RawVolume(data=payload, **fields), modality=modality)
        with pytest.raises(ServiceError, match="INVALID_ARGUMENT") as caught:
            client.call("Segment", request)
        assert fragment.lower() in str(caught.value).lower(), (name, caught.value)
        assert "DOE" not in str(caught.value)
    good = client.segment_request(pb.SegmentRequest(dicom_zip=zip_dicom_series(_ct_folder(config))))
    assert good["modality"] == "CT"


def _router_private_mib() -> float:
    """The router's private (anonymous) resident memory. Not VmRSS: uploads reach the replica through
    Ray's shared-memory object store, whose pages count in the RSS of every process that touched them
    although the store owns, bounds and reuses them (``object_store_memory``)."""
    from ray.util.state import list_actors

    (actor,) = [
        a
        for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
        if a.class_name.endswith(":router") or a.class_name.endswith("Router")
    ][:1]
    with open(f"/proc/{actor.pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["RssAnon"].split()[0]) / 1024


def test_router_memory_returns_after_a_burst_of_large_requests(served) -> None:
    """Six 96 MiB uploads (decoded, then refused for one NaN): the router's private memory grows by less
    than one upload, so no request's bytes or voxels outlive it (measured: about +50 MiB of allocator
    pools with the trim after large requests, +66 MiB without; one retained upload would be +192 MiB)."""
    http, _, config, _ = served
    HttpClient(http).segment_bytes(zip_dicom_series(_ct_folder(config)), "series.zip")
    warm = _router_private_mib()
    shape = (96, 512, 512)
    big = np.zeros(shape, np.float32)
    big[-1, -1, -1] = np.nan
    payload = big.tobytes()
    del big
    fields = {"shape": ",".join(map(str, shape)), "dtype": "float32", "modality": "CT"}
    for _ in range(6):
        response = _post(http, files={"file": ("v.raw", payload)}, data=fields)
        assert response.status_code == 400
        assert "NaN" in response.json()["error"]
    after = _router_private_mib()
    print(f"router private memory: warm {warm:.0f} MiB, after 6 x 96 MiB requests {after:.0f} MiB")
    assert after - warm < 96, (warm, after)


def _headerless(root: Path, modality: Modality, index: int = 0):
    """A series of ``modality`` from ``root`` stripped of every header and recorded modality."""
    import warnings

    from organseg.io import load_case

    refs = [r for r in discover_cases(root) if r.modality is modality]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = load_case(refs[index], with_label=False).image
    bare = image.with_array(image.array)
    bare.meta, bare.modality = {}, Modality.UNKNOWN
    return bare


def _good_request(http: str, target: str, config, transport: str) -> None:
    series = zip_dicom_series(_ct_folder(config))
    if transport == "http":
        good = HttpClient(http).segment_bytes(series, "series.zip")
    else:
        from organseg.serve.proto import segmentation_pb2 as pb

        good = GrpcClient(target).segment_request(pb.SegmentRequest(dicom_zip=series))
    assert good["modality"] == "CT"
    assert good["modality_source"] == "header"
    assert good["modality_confidence"] is None


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_headerless_volume_routes_through_the_modality_classifier(
    served, synth_root: Path, tmp_path: Path, transport: str
) -> None:
    """Voxels without header or modality (patients the classifier never saw): the model directory's
    validated classifier decides, the answer says so with its confidence, and local prediction (the
    same routing function) decides the same."""
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.ensemble.routing import ModalityPolicy
    from organseg.io.files import write_volume_file

    http, target, config, model_dir = served
    status = httpx.get(f"{http}/v1/models", timeout=60).json()["modality_classifier"]
    assert status["used"], status  # the default gate: 4 out-of-fold series per modality
    modalities = ["CT", "MR-T1-in", "MR-T1-out", "MR-T2SPIR"]
    assert status["held_out_series"] == dict.fromkeys(modalities, 4)
    assert status["held_out_accuracy_per_class"] == dict.fromkeys(modalities, 1.0)
    assert (status["folds"], status["patients"]) == (5, 8)
    assert "patient-grouped 5-fold cross-validation" in status["validation"]
    ct = _headerless(synth_root, Modality.CT)
    if transport == "http":
        nifti = tmp_path / "headerless-ct.nii.gz"
        write_volume_file(ct, nifti)
        answer = HttpClient(http).segment_bytes(nifti.read_bytes(), "scan.nii.gz")
        modality, source = answer["modality"], answer["modality_source"]
        confidence, reason = answer["modality_confidence"], answer["modality_reason"]
    else:
        prediction = GrpcClient(target).segment(ct)
        modality, source = prediction.modality.value, prediction.modality_source
        confidence, reason = prediction.modality_confidence, prediction.modality_reason
    print(f"{transport}: {modality} by {source} at {confidence}")
    assert (modality, source) == ("CT", "classifier")
    assert confidence is not None
    assert 0.75 <= confidence <= 1.0
    assert reason.startswith("modality classifier")
    assert f"{confidence:.2f} confidence" in reason
    local = EnsemblePredictor(
        model_dir, device="cpu", policy=ModalityPolicy(min_confidence=0.75)
    ).predict(ct)
    assert (local.modality.value, local.modality_source) == ("CT", "classifier")
    assert local.modality_confidence == pytest.approx(confidence, abs=1e-4)
    assert local.report()["modality_confidence"] == pytest.approx(confidence, abs=1e-4)
    _good_request(http, target, config, transport)


def test_a_confidently_wrong_classifier_is_refused_not_answered(
    served, synth_root: Path, tmp_path: Path
) -> None:
    """A classifier that says MR-T2SPIR for CT (and CT for T2-SPIR) as confidently as the right one
    says CT: its out-of-fold record shows it, so the gate refuses it, over HTTP and gRPC a 422 /
    INVALID_ARGUMENT naming its per-modality accuracy, never a T2-SPIR segmentation of a CT."""
    from organseg.ensemble.describe import describe_model_dir, served_view
    from organseg.ensemble.modality_classifier import ModalityClassifier
    from organseg.ensemble.routing import ModalityPolicy
    from organseg.ensemble.version import model_version
    from organseg.io.files import write_volume_file
    from tests.conftest import confidently_wrong_model
    from tests.serve.conftest import served_schema, switch_to

    http, target, config, model_dir = served
    wrong_dir = confidently_wrong_model(Path(model_dir), tmp_path / "wrong")
    ct = _headerless(synth_root, Modality.CT)
    wrong = ModalityClassifier.load(wrong_dir)
    assert wrong is not None
    guess = wrong.predict(ct)
    assert (guess.modality, guess.confidence >= 0.75) == (Modality.MR_T2SPIR, True)
    # the overall gate alone would let a lenient operator through; the per-modality gate does not
    lenient = ModalityPolicy(min_held_out_accuracy=0.5)
    assert "on CT series is 0.00 (0 of 4" in (
        wrong.validation_problem(0.5, 4, lenient.min_held_out_accuracy_per_modality) or ""
    )
    nifti = tmp_path / "headerless-ct.nii.gz"
    write_volume_file(ct, nifti)

    try:
        models = switch_to(http, served_schema(wrong_dir), wrong_dir)
        # /v1/models is the one description of the model directory (`organseg models show`'s)
        described = describe_model_dir(wrong_dir, ModalityPolicy(min_confidence=0.75))
        served_as = served_view(described, model_version(wrong_dir))
        assert models == json.loads(json.dumps(served_as))
        status = models["modality_classifier"]
        assert status["used"] is False
        assert status["held_out_accuracy_per_class"]["CT"] == 0.0
        with pytest.raises(ServiceError) as over_http:
            HttpClient(http).segment_bytes(nifti.read_bytes(), "scan.nii.gz")
        assert "422" in str(over_http.value)
        with pytest.raises(ServiceError, match="INVALID_ARGUMENT") as over_grpc:
            GrpcClient(target).segment(ct)
        for caught in (over_http, over_grpc):
            message = str(caught.value)
            assert "out-of-fold held-out accuracy is 0.50" in message
            assert "send the modality field" in message
            assert "MR-T2SPIR" not in message.split("send the modality field")[0]
    finally:
        restored = switch_to(http, served_schema(model_dir), model_dir)
    assert restored["modality_classifier"]["used"]
    _good_request(http, target, config, "http")


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_classifier_below_its_confidence_is_a_422_asking_for_modality(
    served, synth_root: Path, transport: str
) -> None:
    """A T1 in-phase series the tiny classifier is unsure about (below the served 0.75): refused,
    naming its best answer and what to send; nothing is segmented."""
    http, target, config, _ = served
    t1 = _headerless(synth_root, Modality.MR_T1_IN)
    if transport == "http":
        with pytest.raises(ServiceError) as caught:
            HttpClient(http).segment(t1)
        assert "422" in str(caught.value)
    else:
        with pytest.raises(ServiceError, match="INVALID_ARGUMENT") as caught:
            GrpcClient(target).segment(t1)
    message = str(caught.value)
    assert "the modality classifier says" in message
    assert "below the 0.75 required" in message
    assert "send the modality field" in message
    _good_request(http, target, config, transport)


# -- malformed forms, doubled fields, overflowing shapes ---------------------------------------------


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "bnd") -> bytes:
    """A form body from (Content-Disposition parameters, data) pairs, written by hand so that it can
    be malformed."""
    body = b""
    for disposition, data in parts:
        head = f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode()
        body += head + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _malformed_forms(config) -> list[tuple[str, bytes, int, str]]:
    """(name, body under boundary 'bnd', HTTP status, message fragment)."""
    series = zip_dicom_series(_ct_folder(config))
    upload = 'name="file"; filename="s.zip"'
    return [
        ("garbage after the boundary", b"--bnd\r\n\x00\xff\x00garbage" * 3, 400, "malformed multipart"),
        ("garbage boundary line", b"--bnd garbage\r\n\r\n", 400, "malformed multipart"),
        ("a part without a name", _multipart([('filename="s.zip"', series)]), 400, "no name"),
        ("21 form fields", _multipart([(f'name="f{k}"', b"x") for k in range(21)]), 400,
         "too many fields"),
        ("a 2 MiB modality field", _multipart([(upload, series), ('name="modality"', b"C" * (2 << 20))]),
         413, "'modality'"),
        ("two file parts", _multipart([(upload, series), ('name="file"; filename="b.zip"', series)]), 400,
         "'file' sent more than once"),
        ("two modality fields", _multipart([(upload, series), ('name="modality"', b"CT"),
                                            ('name="modality"', b"MR-T2SPIR")]), 400,
         "'modality' sent more than once"),
        ("two t2 parts", _multipart([(upload, series), ('name="t2"; filename="a"', series),
                                     ('name="t2"; filename="b"', series)]), 400, "'t2' sent more than once"),
    ]  # fmt: skip


def test_http_malformed_forms_are_4xx_naming_the_problem(served) -> None:
    """Each malformed or ambiguous form is the sender's fault: 400 / 413 with what is wrong and a
    request id, never a 500; a doubled single-valued field is refused, never half-used."""
    http, _, config, _ = served
    headers = {"content-type": "multipart/form-data; boundary=bnd"}
    for name, body, status, fragment in _malformed_forms(config):
        response = _post(http, content=body, headers=headers)
        assert response.status_code == status, (name, response.text)
        answer = response.json()
        assert fragment.lower() in answer["error"].lower(), (name, answer)
        assert answer["request_id"] == response.headers["x-request-id"], name
    # a size that only overflows once multiplied is as much the sender's fault as inf
    for shape in ("1e30,1,1", "4294967296,4294967296,1"):
        response = _post(
            http, files={"file": ("v", b"\0" * 8)}, data={"shape": shape, "dtype": "int16"}
        )
        assert response.status_code == 400, (shape, response.text)
        assert "'shape'" in response.json()["error"], shape
    good = HttpClient(http).segment_bytes(zip_dicom_series(_ct_folder(config)), "series.zip")
    assert good["modality"] == "CT"


def test_grpc_shape_whose_product_overflows_is_resource_exhausted(served) -> None:
    from organseg.serve.proto import segmentation_pb2 as pb

    _, target, _, _ = served
    huge = pb.RawVolume(data=b"\0" * 8, dtype="int16", shape=[2**62, 2**62, 4])
    with pytest.raises(ServiceError, match="RESOURCE_EXHAUSTED") as caught:
        GrpcClient(target).call("Segment", pb.SegmentRequest(raw=huge, modality="CT"))
    assert "limit" in str(caught.value)


# -- free-text headers never reach answers or logs ----------------------------------------------------


def _described_zip(config, modality: Modality, description: str, tmp_path: Path) -> bytes:
    """A synthetic series of ``modality`` whose SeriesDescription is ``description``."""
    import pydicom

    from organseg.train.data import dataset_root

    source = next(
        r for r in discover_cases(dataset_root(config)) if r.modality is modality
    ).image_dir
    folder = tmp_path / modality.value
    folder.mkdir()
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.save_as(folder / f.name)
    return zip_dicom_series(folder)


def _ray_logs_holding(marker: str) -> list[str]:
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # the cluster's log folder
    return [str(p) for p in logs.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_series_description_free_text_never_reaches_answers_or_logs(
    served, tmp_path: Path, transport: str
) -> None:
    """Sites write names and accession numbers into SeriesDescription: the 422 for a sequence this
    server does not serve, and the answer for one it serves, name the recognised sequence only."""
    import time
    import uuid

    from organseg.serve.proto import segmentation_pb2 as pb

    http, target, config, _ = served
    marker = f"ZZ{uuid.uuid4().hex[:8].upper()}^PATIENT"
    not_served = _described_zip(
        config, Modality.MR_T1_IN, f"T1 in phase {marker} ACC4711", tmp_path
    )
    served_t2 = _described_zip(config, Modality.MR_T2SPIR, f"T2 SPIR {marker} T2SPIR", tmp_path)
    if transport == "http":
        response = _post(http, files={"file": ("s.zip", not_served)})
        assert response.status_code == 422, response.text
        refusal = response.text
        answer = json.dumps(HttpClient(http).segment_bytes(served_t2, "s.zip"))
    else:
        client = GrpcClient(target)
        with pytest.raises(ServiceError, match="FAILED_PRECONDITION") as caught:
            client.call("Segment", pb.SegmentRequest(dicom_zip=not_served))
        refusal = str(caught.value)
        result = client.segment_request(pb.SegmentRequest(dicom_zip=served_t2))
        answer = json.dumps({k: v for k, v in result.items() if k != "labels"}, default=str)
    assert "T1 in-phase" in refusal, refusal
    assert "no ensemble" in refusal, refusal
    assert "T2-SPIR" in answer
    assert marker not in refusal, refusal
    assert "ACC4711" not in refusal, refusal
    assert marker not in answer
    # the absence is checked once a later request's log line is in a file: the lines before it are
    last = _post(http, files={"file": ("x.zip", b"not a zip")})
    assert last.status_code == 400, last.text
    deadline = time.monotonic() + 60
    while not _ray_logs_holding(last.headers["x-request-id"]):
        assert time.monotonic() < deadline, "the last request's log line never reached a file"
        time.sleep(0.2)
    assert _ray_logs_holding(marker) == []
