"""`POST /v1/studies` for a model that stacks series: a study's T1 in-phase, out-of-phase and T2-SPIR
series posted in one STOW-RS body (parts in any order) answer one DICOM-SEG over the T1 in-phase series,
equal to what the multi-series segment route answers for the same series. A body missing a series or
mixing studies is refused naming series by the hash of their UID, and the next good body is answered."""

from __future__ import annotations

import base64
import io
import random
import zlib
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from organseg.io.privacy import short_uid
from organseg.serve.stow import encode_multipart
from tests.conftest import MR_SERIES, loopback_serve_config, mr_series_folder, serving, zip_bytes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MARKER = "QQSTOWMC3K"
MAX_MB = 2


def _voxels(data_root: Path, case: int, kind: str) -> int:
    paths = sorted(mr_series_folder(data_root, case, kind).iterdir())
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return int(first.Rows) * int(first.Columns) * len(paths)


@pytest.fixture(scope="module")
def stow_mc(ray_cluster, multicontrast_model: tuple[Path, Path], pacs_tools):
    """The stacking cascade served on free loopback ports: ``(http url, dataset root)``."""
    model_dir, data_root = multicontrast_model
    # limits a study's three series fit in, a fourth series does not
    voxels = max(sum(_voxels(data_root, case, kind) for kind in MR_SERIES) for case in (1, 2))
    http_port, grpc_port = pacs_tools.free_port(), pacs_tools.free_port()
    schema = loopback_serve_config(model_dir, http_port, grpc_port,
                                   max_voxels=voxels + voxels // 6, max_request_mb=MAX_MB)  # fmt: skip
    with serving(schema):
        yield f"http://127.0.0.1:{http_port}", data_root


def _study(data_root: Path, case: int) -> dict[str, list[bytes]]:
    """A case's three series as Part-10 bytes, the patient's name set to a marker."""
    study = {}
    for kind in MR_SERIES:
        parts = []
        for path in sorted(mr_series_folder(data_root, case, kind).iterdir()):
            ds = pydicom.dcmread(path)
            ds.PatientName = f"{MARKER}^Test"
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            parts.append(buffer.getvalue())
        study[kind] = parts
    return study


def _stow(url: str, parts: list[bytes], accept: str = "application/dicom", query: str = ""):
    body, content_type = encode_multipart(parts)
    headers = {"content-type": content_type, "accept": accept}
    return httpx.post(f"{url}/v1/studies{query}", content=body, headers=headers, timeout=120)


def _headers(parts: list[bytes]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True) for p in parts]


def _label(parts: list[bytes]) -> str:
    return f"series {short_uid(_headers(parts[:1])[0].SeriesInstanceUID)}"


def _segment_route(url: str, study: dict[str, list[bytes]]) -> dict:
    """The same series through the multi-series segment route (a zip of the series), labels decoded."""
    entries = [
        (f"{kind}/{n:04d}.dcm", data)
        for kind, parts in study.items()
        for n, data in enumerate(parts)
    ]
    files = {"file": ("study.zip", zip_bytes(entries))}
    answer = httpx.post(
        f"{url}/v1/segment", files=files, data={"output_format": "raw"}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    labels = np.frombuffer(zlib.decompress(base64.b64decode(body["labels"])), np.uint8)
    body["labels"] = labels.reshape(body["shape"])
    return body


def _seg_labels(seg: pydicom.Dataset, source: list[pydicom.Dataset], organs: list[int]):
    """The SEG as organ label ids over ``source`` (in the given order); segment k is the k-th organ
    present (the SEG numbers segments in the order of the organ ids)."""
    import highdicom as hd

    decoded = hd.seg.Segmentation.from_dataset(seg)
    segments = decoded.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in source],
        combine_segments=True,
        skip_overlap_checks=True,
        assert_missing_frames_are_empty=True,
    )
    return np.asarray([0, *organs], dtype=np.uint8)[segments]


def _along_normal(headers: list[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The slices in the order of their position along the slice normal (the volume's order)."""
    cosines = np.asarray([float(v) for v in headers[0].ImageOrientationPatient])
    normal = np.cross(cosines[:3], cosines[3:])
    return sorted(
        headers, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient]))
    )


def test_series_of_a_study_posted_together_answer_one_seg_over_the_in_phase_series(
    stow_mc,
) -> None:
    url, data_root = stow_mc
    study = _study(data_root, 2)
    parts = study["in"] + study["out"] + study["t2"]
    random.Random(5).shuffle(parts)
    expected = _segment_route(url, study)
    labels = expected["labels"]
    organs = [int(v) for v in np.unique(labels) if v]
    assert organs, "the test model must predict something on this case"

    response = _stow(url, parts)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    seg = pydicom.dcmread(io.BytesIO(response.content))
    in_phase = _headers(study["in"])
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == in_phase[0].SeriesInstanceUID
    referenced_sops = {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence}
    assert referenced_sops <= {ds.SOPInstanceUID for ds in in_phase}
    assert seg.StudyInstanceUID == in_phase[0].StudyInstanceUID
    np.testing.assert_array_equal(_seg_labels(seg, _along_normal(in_phase), organs), labels)

    report = _stow(url, parts, accept="application/json")
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["modality"] == "MR-T1-in"
    assert body["slices"] == len(study["in"])
    assert body["volumes_ml"] == expected["volumes_ml"]
    assert body["registration"] == expected["registration"]
    used = [(s["role"], s["modality"], s["series"]) for s in body["series"]]
    assert used == [
        ("image", "MR-T1-in", _label(study["in"])),
        ("out_phase", "MR-T1-out", _label(study["out"])),
        ("t2", "MR-T2SPIR", _label(study["t2"])),
    ]
    assert "in-phase" in body["answers_for"]
    assert MARKER not in report.text


def test_a_missing_or_foreign_series_is_refused_and_the_next_body_is_answered(stow_mc) -> None:
    url, data_root = stow_mc
    study, other = _study(data_root, 1), _study(data_root, 2)
    good = study["t2"] + study["in"] + study["out"]
    refused = {
        "missing T2": (study["in"] + study["out"], "", 422, "not the T2-SPIR series"),
        "missing out-phase": (study["in"] + study["t2"], "", 422,
                              "not the T1 out-of-phase series"),
        "two studies": (study["in"] + study["out"] + other["t2"], "", 400,
                        "2 studies (StudyInstanceUID differs"),
        "modality with several": (good, "?modality=MR-T1-in", 400,
                                  "modality parameter names one"),
    }  # fmt: skip
    uids = {str(ds.StudyInstanceUID) for ds in _headers(study["in"][:1] + other["t2"][:1])}
    for what, (parts, query, status, expected) in refused.items():
        response = _stow(url, parts, query=query)
        assert response.status_code == status, (what, response.text)
        error = response.json()["error"]
        assert expected in error, what
        assert MARKER not in response.text, what
        assert not any(uid in response.text for uid in uids), what
        if what.startswith("missing"):
            assert _label(study["in"]) in error, what
            assert "add it to the STOW-RS body" in error, what
        answer = _stow(url, good, accept="application/json")
        assert answer.status_code == 200, (what, answer.text)
        assert [s["role"] for s in answer.json()["series"]] == ["image", "out_phase", "t2"]


def test_the_byte_and_voxel_limits_hold_for_the_whole_body(stow_mc) -> None:
    """A chunked body (no Content-Length) is cut off at the byte limit while it streams in; four
    series that pass the voxel limit together are refused from their headers (413), and a good
    body is answered afterwards."""
    url, data_root = stow_mc
    study = _study(data_root, 1)
    body, content_type = encode_multipart(study["in"] * (MAX_MB * 2**20 // len(study["in"][0]) + 1))
    assert len(body) > MAX_MB * 2**20

    def chunks():
        for start in range(0, len(body), 2**16):
            yield body[start : start + 2**16]

    headers = {"content-type": content_type}
    too_big = httpx.post(f"{url}/v1/studies", content=chunks(), headers=headers, timeout=60)
    assert too_big.status_code == 413, too_big.text
    assert "stopped reading it" in too_big.json()["error"]

    copy = []
    for data in study["t2"]:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.SeriesInstanceUID += ".9"
        ds.SOPInstanceUID += ".9"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        copy.append(buffer.getvalue())
    four = _stow(url, study["in"] + study["out"] + study["t2"] + copy)
    assert four.status_code == 413, four.text
    assert "the body's 4 series hold" in four.json()["error"]
    assert MARKER not in four.text
    answer = _stow(url, study["in"] + study["out"] + study["t2"], accept="application/json")
    assert answer.status_code == 200, answer.text
