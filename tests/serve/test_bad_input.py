"""Every kind of bad request gets a 4xx / matching gRPC status naming the problem; the next good one works."""

from __future__ import annotations

import gzip
import io
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
    ]  # fmt: skip
    for request, code, fragment in cases:
        with pytest.raises(ServiceError, match=code.name) as caught:
            client.call("Segment", request)
        assert fragment.lower() in str(caught.value).lower()
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
