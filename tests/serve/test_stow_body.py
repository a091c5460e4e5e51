"""A STOW-RS body of several series, without a server: parts grouped by SeriesInstanceUID from their
headers, one study and patient checked, the voxel limit held over the whole body before any pixel is
decoded, each series read like a single one; refusals name series by the hash of their UID only."""

from __future__ import annotations

import io
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from organseg.ensemble.assembly import assemble
from organseg.ensemble.routing import ModalityError
from organseg.errors import DataError, RequestTooLarge
from organseg.io import read_dicom_series
from organseg.io.privacy import short_uid
from organseg.preprocess.config import PreprocessConfig
from organseg.serve.stow import (
    STOW_HINTS,
    encode_multipart,
    series_from_parts,
    series_inputs,
    split_multipart,
)
from tests.conftest import MR_SERIES, mr_series_folder

MARKER = "QQSTOWBODY5X"
LIMIT = 10_000_000


def _spec(t1_mode: str = "stack", t2_channel: bool = True) -> SimpleNamespace:
    preprocess = PreprocessConfig(size=64, t1_mode=t1_mode, t2_channel=t2_channel)
    return SimpleNamespace(name="mc", preprocess=preprocess)


def _edited(paths: list[Path], edit=None) -> list[bytes]:
    """The files as Part-10 bytes, each header edited by ``edit``; the patient named ``MARKER``."""
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientName = f"{MARKER}^Test"
        if edit is not None:
            edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def _files(root: Path, case: int, kind: str) -> list[Path]:
    return sorted(mr_series_folder(root, case, kind).glob("*.dcm"))


@pytest.fixture(scope="module")
def study(synth_root: Path) -> dict[str, list[bytes]]:
    """Case 1's three series as STOW-RS parts, the patient's name set to a marker."""
    return {kind: _edited(_files(synth_root, 1, kind)) for kind in MR_SERIES}


def _through_multipart(parts: list[bytes]) -> list[bytes]:
    body, content_type = encode_multipart(parts)
    return split_multipart(body, content_type)


def _uid(part: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True).SeriesInstanceUID)


def test_three_series_shuffled_are_read_and_assembled_on_the_in_phase_grid(
    synth_root: Path, study
) -> None:
    parts = study["in"] + study["out"] + study["t2"]
    random.Random(3).shuffle(parts)
    received = series_from_parts(_through_multipart(parts), LIMIT)
    assert len(received) == 3
    by_label = {r.label: r for r in received}
    for kind in MR_SERIES:
        series = by_label[f"series {short_uid(_uid(study[kind][0]))}"]
        expected = read_dicom_series(_files(synth_root, 1, kind)[0].parent)  # geometry order
        np.testing.assert_array_equal(series.volume.array, expected.array)
        assert len(series.datasets) == series.volume.shape[0]
    assembled = assemble(series_inputs(received, None), _spec(), hints=STOW_HINTS)
    primary = by_label[f"series {short_uid(_uid(study['in'][0]))}"]
    assert assembled.image is primary.volume
    assert assembled.partner is not None
    assert assembled.t2 is not None
    assert [(s["role"], s["modality"]) for s in assembled.series] == [
        ("image", "MR-T1-in"),
        ("out_phase", "MR-T1-out"),
        ("t2", "MR-T2SPIR"),
    ]
    assert all(s["series"].startswith("series uid:") for s in assembled.series)
    # the SEG references the in-phase instances in the labels' slice order
    positions = [float(ds.ImagePositionPatient[2]) for ds in primary.datasets]
    assert positions == sorted(positions)


def test_missing_series_is_named_with_stow_advice(study) -> None:
    received = series_from_parts(_through_multipart(study["in"] + study["out"]), LIMIT)
    with pytest.raises(ModalityError) as missing:
        assemble(series_inputs(received, None), _spec(), hints=STOW_HINTS)
    message = str(missing.value)
    assert "not the T2-SPIR series: add it to the STOW-RS body" in message
    assert f"series {short_uid(_uid(study['in'][0]))}" in message
    assert "'t2'" not in message
    assert "zip" not in message
    assert MARKER not in message


def test_series_whose_sequence_is_unknown_gets_stow_advice(study, synth_root: Path) -> None:
    def blank(ds: pydicom.Dataset) -> None:
        for keyword in ("SeriesDescription", "ProtocolName", "SequenceName", "EchoTime"):
            if keyword in ds:
                delattr(ds, keyword)

    unknown = _edited(_files(synth_root, 1, "t2"), blank)
    received = series_from_parts(study["in"] + study["out"] + unknown, LIMIT)
    with pytest.raises(ModalityError, match="cannot tell the modality") as exc:
        assemble(series_inputs(received, None), _spec(), hints=STOW_HINTS)
    assert "STOW-RS body states no modality" in str(exc.value)
    assert "named part" not in str(exc.value)
    with pytest.raises(DataError, match="modality parameter names one"):
        series_inputs(received, "MR-T2SPIR")


def test_two_studies_or_patients_are_refused_before_decoding(study, synth_root: Path) -> None:
    other = _edited(_files(synth_root, 2, "t2"))
    with pytest.raises(DataError, match=r"2 studies \(StudyInstanceUID differs") as exc:
        series_from_parts(study["in"] + study["out"] + other, LIMIT)
    message = str(exc.value)
    assert f"series {short_uid(_uid(other[0]))}" in message
    study_uid = pydicom.dcmread(io.BytesIO(other[0]), stop_before_pixels=True).StudyInstanceUID
    assert str(study_uid) not in message

    def move(ds: pydicom.Dataset) -> None:
        ds.PatientID = f"{MARKER}-ID"

    moved = _edited(_files(synth_root, 1, "t2"), move)
    with pytest.raises(DataError, match=r"2 patients \(PatientID differs") as exc:
        series_from_parts(study["in"] + moved, LIMIT)
    assert MARKER not in str(exc.value)


def test_voxel_limit_holds_over_the_whole_body_before_decoding(study) -> None:
    one = 12 * 64 * 64
    broken = list(study["t2"])
    ds = pydicom.dcmread(io.BytesIO(broken[3]))
    ds.PixelData = ds.PixelData[:10]  # would be refused as truncated, were it decoded
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    broken[3] = buffer.getvalue()
    with pytest.raises(RequestTooLarge, match=f"3 series hold {3 * one} voxels"):
        series_from_parts(study["in"] + study["out"] + broken, 3 * one - 1)
    with pytest.raises(DataError, match=r"truncated|corrupt") as exc:
        series_from_parts(study["in"] + study["out"] + broken, 3 * one)
    assert f"series {short_uid(_uid(broken[0]))}" in str(exc.value)
    assert MARKER not in str(exc.value)


def test_several_series_for_a_one_series_model_are_refused_before_decoding(study) -> None:
    why = "ensemble 'ct' does not stack series (t1_mode: separate)"
    with pytest.raises(DataError, match=r"holds 2 series \(series uid:\w+, series uid:\w+\)"):
        series_from_parts(study["in"] + study["out"], LIMIT, why)
    (single,) = series_from_parts(study["t2"], LIMIT, why)  # one series: as before
    assert single.volume.shape == (12, 64, 64)


def test_dual_echo_under_one_uid_is_split_by_echo_time(study) -> None:
    uid = _uid(study["in"][0])

    def same_series(ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID = uid

    out = [_edited_bytes(p, same_series) for p in study["out"]]
    received = series_from_parts(study["in"] + out, LIMIT)
    assert all(r.label.startswith(f"series {short_uid(uid)} at EchoTime ") for r in received)
    assembled = assemble(series_inputs(received, None), _spec(t2_channel=False), hints=STOW_HINTS)
    assert assembled.partner is not None


def _edited_bytes(data: bytes, edit) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    edit(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_parts_without_series_uid_or_with_broken_headers_are_named_by_number(study) -> None:
    def no_uid(ds: pydicom.Dataset) -> None:
        del ds.SeriesInstanceUID

    parts = study["in"] + [_edited_bytes(study["out"][0], no_uid)] + study["out"][1:]
    number = len(study["in"]) + 1
    with pytest.raises(DataError, match=f"multipart part {number}: no SeriesInstanceUID"):
        series_from_parts(parts, LIMIT)
    with pytest.raises(DataError, match=r"multipart part 2: no SeriesInstanceUID \(or a damaged"):
        series_from_parts([study["in"][1], study["in"][0][:200]], LIMIT)

    def odd_rows(ds: pydicom.Dataset) -> None:  # a US value of one byte cannot be converted
        rows = Tag("Rows")
        ds._dict[rows] = RawDataElement(rows, "US", 1, b"\x01", 0, False, True)

    with pytest.raises(DataError, match="multipart part 2 has an unreadable DICOM header"):
        series_from_parts([study["in"][1], _edited_bytes(study["in"][0], odd_rows)], LIMIT)
