"""`POST /v1/studies` on the served graph: a STOW-RS body in, the DICOM-SEG (or a report) out."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from organseg.serve.stow import encode_multipart
from tests.conftest import loopback_serve_config, serving

pytestmark = [pytest.mark.ray, pytest.mark.sample, pytest.mark.slow]
MARKER = "QQMARKER7Z"


@pytest.fixture(scope="module")
def stow_server(ray_cluster, ct_model: Path, pacs_tools):
    """The app deployed with the test CT model on free loopback ports."""
    http_port, grpc_port = pacs_tools.free_port(), pacs_tools.free_port()
    with serving(loopback_serve_config(ct_model, http_port, grpc_port, max_request_mb=256)):
        yield f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def _stow(url: str, parts: list[bytes], accept: str = "application/dicom") -> httpx.Response:
    body, content_type = encode_multipart(parts)
    headers = {"content-type": content_type, "accept": accept}
    return httpx.post(f"{url}/v1/studies", content=body, headers=headers, timeout=300)


@pytest.mark.parametrize("codec", ["jpeg-ls", "jpeg2000", "rle"])
def test_compressed_series_answer_the_same_seg(
    stow_server, codec, compressed_copies, reference_mask, pacs_tools
) -> None:
    copy = compressed_copies[codec]
    response = _stow(stow_server[0], [p.read_bytes() for p in reversed(copy.files)])  # any order
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    seg = pydicom.dcmread(io.BytesIO(response.content))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == copy.series_uid
    assert np.array_equal(pacs_tools.seg_mask(seg, copy.sop_uids), reference_mask)


def test_json_report_when_asked(stow_server, ct_files, reference_mask) -> None:
    response = _stow(stow_server[0], [p.read_bytes() for p in ct_files], accept="application/json")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["modality"] == "CT"
    assert report["slices"] == len(ct_files)
    assert report["volumes_ml"]["liver"] > 0


def test_bad_bodies_are_clear_4xx_without_patient_data(
    stow_server, ct_files, pacs_tools, tmp_path
) -> None:
    url = f"{stow_server[0]}/v1/studies"
    wrong_type = httpx.post(url, content=b"PK\x03\x04", headers={"content-type": "application/zip"})
    assert wrong_type.status_code == 400
    assert "multipart/related" in wrong_type.json()["error"]

    not_dicom = b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n"
    ctype = 'multipart/related; type="application/dicom"; boundary=b'
    answer = httpx.post(url, content=not_dicom, headers={"content-type": ctype})
    assert answer.status_code == 400
    assert "part 1" in answer.json()["error"]

    copy = pacs_tools.copy_series(ct_files[30:40], tmp_path / "bad", "http-bad", patient=MARKER)
    broken = pydicom.dcmread(copy.files[4])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    broken.save_as(copy.files[4], enforce_file_format=True)
    response = _stow(stow_server[0], [p.read_bytes() for p in copy.files])
    assert response.status_code == 400
    assert "truncated" in response.json()["error"] or "corrupt" in response.json()["error"]
    assert MARKER not in response.text


def test_several_series_for_a_one_series_model_are_refused(stow_server, ct_files) -> None:
    """Two series of one study for an ensemble that reads one series: a 400 naming both by the hash
    of their UID (never a silent pick of one), then one series is answered as before."""
    from pydicom.uid import generate_uid

    from organseg.io.privacy import short_uid

    parts, series_uids = [], []
    for copy in ("a", "b"):
        series_uids.append(generate_uid(entropy_srcs=["stow-two-series", copy]))
        for path in ct_files[30:36]:
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = series_uids[-1]
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[copy, str(ds.SOPInstanceUID)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientName = f"{MARKER}^Test"
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            parts.append(buffer.getvalue())
    response = _stow(stow_server[0], parts[::-1])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "holds 2 series" in error
    assert "does not stack series" in error
    assert all(f"series {short_uid(uid)}" in error for uid in series_uids)
    assert MARKER not in response.text
    answer = _stow(stow_server[0], parts[:6], accept="application/json")
    assert answer.status_code == 200, answer.text
    assert answer.json()["series"][0]["series"] == f"series {short_uid(series_uids[0])}"


@pytest.mark.parametrize("transport", ["endpoint", "grpc"])
def test_node_segments_through_the_served_graph(
    stow_server, transport, compressed_copies, reference_mask, pacs_tools, tmp_path
) -> None:
    """The node's core with `--endpoint` / `--grpc` (no destination: results stay in the spool)."""
    from organseg.pacs.node import SeriesNode, make_backend
    from organseg.pacs.spool import Spool

    http, grpc_target = stow_server
    segment = (
        make_backend(endpoint=http)
        if transport == "endpoint"
        else make_backend(grpc_target=grpc_target)
    ).segment
    copy = compressed_copies["rle"]
    spool = Spool(tmp_path / "spool")
    for path, uid in zip(copy.files, copy.sop_uids, strict=True):
        spool.add(copy.series_uid, uid, path.read_bytes())
    (outcome,) = SeriesNode(spool, segment, [], quiet_s=0).poll()
    assert outcome.status == "delivered", outcome.detail
    (seg_file,) = (tmp_path / "spool" / "results").rglob("*SEG.dcm")
    seg = pydicom.dcmread(seg_file)
    assert np.array_equal(pacs_tools.seg_mask(seg, copy.sop_uids), reference_mask)
