"""Uploaded DICOM: stacked by position whatever the member names; unsafe or oversized zips refused."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.errors import DataError, RequestTooLarge
from organseg.io import read_dicom_series
from organseg.serve.wire import WireLimits, decode_dicom_zip, decode_upload
from tests.conftest import zip_bytes


def test_uid_named_shuffled_zip_equals_the_series(synth_ct_files: list[Path]) -> None:
    expected = read_dicom_series(synth_ct_files[0].parent)
    rng = np.random.default_rng(3)
    entries = [
        (
            f"PATIENT_DOE^JANE/{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID}",
            p.read_bytes(),
        )
        for p in synth_ct_files
    ]
    volume = decode_dicom_zip(
        zip_bytes([entries[i] for i in rng.permutation(len(entries))], deflate=True), WireLimits()
    )
    np.testing.assert_array_equal(volume.array, expected.array)
    assert volume.geometry.isclose(expected.geometry)
    assert "DOE" not in repr(volume.meta)  # no uploaded names kept


def test_errors_name_slices_not_uploaded_files(synth_ct_files: list[Path]) -> None:
    entries = [
        (f"DOE^JANE-{k}.dcm", p.read_bytes()) for k, p in enumerate(synth_ct_files) if k != 5
    ]
    with pytest.raises(DataError, match="missing") as info:
        decode_dicom_zip(zip_bytes(entries, deflate=True), WireLimits())
    assert "InstanceNumber 5" in str(info.value)
    assert "DOE" not in str(info.value)
    assert "/tmp" not in str(info.value)
    assert "member-" not in str(info.value)


@pytest.mark.parametrize(
    "name", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:\\evil.dcm"]
)
def test_unsafe_member_names_are_refused(synth_ct_files: list[Path], name: str) -> None:
    entries = [(p.name, p.read_bytes()) for p in synth_ct_files] + [
        (name, synth_ct_files[0].read_bytes())
    ]
    with pytest.raises(DataError, match=f"zip member {len(entries)} has an unsafe name") as info:
        decode_dicom_zip(zip_bytes(entries, deflate=True), WireLimits())
    assert "evil" not in str(info.value)


def test_lying_member_sizes_are_stopped_while_unpacking() -> None:
    """A member whose header claims 10 bytes but inflates to 64 MiB stops at the byte limit."""
    data = zip_bytes([("a.dcm", b"\0" * (64 << 20))], deflate=True)
    patched = bytearray(data)
    # rewrite the uncompressed size in the central directory (and local header) to 10 bytes
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = patched.find(signature)
        patched[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    limits = WireLimits(max_request_bytes=1 << 20)
    with pytest.raises((RequestTooLarge, DataError), match=r"MiB|corrupt"):
        decode_dicom_zip(bytes(patched), limits)


def test_header_voxel_check_refuses_before_decoding(synth_ct_files: list[Path]) -> None:
    ds = pydicom.dcmread(synth_ct_files[0])
    ds.Rows = ds.Columns = 16000  # a lying header; the pixels are still 64x64
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(RequestTooLarge, match="claims at least 256000000 voxels"):
        decode_upload(
            zip_bytes([("x.dcm", buffer.getvalue())], deflate=True),
            None,
            WireLimits(max_voxels=10**7),
        )
    with pytest.raises(
        DataError, match="truncated"
    ):  # within the voxel limit, the bytes are not there
        decode_upload(zip_bytes([("x.dcm", buffer.getvalue())], deflate=True), None, WireLimits())


def test_single_dicom_file_upload(synth_ct_files: list[Path]) -> None:
    volume = decode_upload(synth_ct_files[3].read_bytes(), "DOE^JANE.dcm", WireLimits())
    assert volume.shape == (1, 64, 64)
    assert volume.meta["Modality"] == "CT"
    assert volume.spacing[2] > 0
