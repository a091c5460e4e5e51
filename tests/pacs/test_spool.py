"""The spool and the privacy helpers: pure logic, no network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydicom
import pytest

from organseg.errors import DataError
from organseg.io.privacy import phi_values, redact, short_uid
from organseg.pacs.spool import Spool, key_of
from organseg.serve.stow import encode_multipart, split_multipart


def test_instances_land_whole_and_series_become_ready_after_the_quiet_period(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    spool.add("1.2.3", "1.2.3.1", b"a" * 10)
    spool.add("1.2.3", "1.2.3.2", b"b" * 10)
    spool.add("1.2.3", "1.2.3.2", b"c" * 10)  # a resend replaces
    files = sorted((tmp_path / "incoming" / key_of("1.2.3")).iterdir())
    assert [f.read_bytes() for f in files] == sorted([b"a" * 10, b"c" * 10])
    assert not list((tmp_path / "tmp").iterdir())
    assert "1.2.3" not in "".join(str(p) for p in tmp_path.rglob("*"))  # names are hashes
    now = time.time()
    assert spool.ready(quiet_s=5, now=now) == []
    assert spool.ready(quiet_s=5, now=now + 6) == [key_of("1.2.3")]


def test_restart_resumes_and_gives_interrupted_series_a_fresh_quiet_period(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.add("1.2.3", "1.2.3.1", b"a")
    folder = tmp_path / "incoming" / key_of("1.2.3")
    os.utime(folder, (time.time() - 100, time.time() - 100))
    (tmp_path / "tmp" / "half.part").write_bytes(b"x")  # a write cut by the crash
    claimed = Spool(tmp_path)
    spool.add("9.9", "9.9.1", b"z")
    assert claimed.claim(key_of("9.9")) is not None  # claimed but not finished: resumed first
    restarted = Spool(tmp_path)
    assert not list((tmp_path / "tmp").iterdir())
    assert restarted.ready(quiet_s=5) == [key_of("9.9")]
    assert restarted.ready(quiet_s=5, now=time.time() + 6) == [key_of("9.9"), key_of("1.2.3")]


def test_quarantine_keeps_every_instance_and_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(3):
        spool.add("1.2.3", f"1.2.3.{n}", b"a")
    key = key_of("1.2.3")
    spool.claim(key)
    first = spool.quarantine(key, "slice 2 truncated")
    spool.add("1.2.3", "1.2.3.9", b"a")
    second = spool.quarantine(key, "again")
    assert first.folder != second.folder
    assert len(list(first.folder.glob("*.dcm"))) == 3
    assert [q.reason for q in spool.quarantined()] == ["slice 2 truncated", "again"]


def test_results_stay_when_there_is_no_destination(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.add("1.2.3", "1.2.3.1", b"a")
    key = key_of("1.2.3")
    spool.claim(key)
    spool.put_outbox(key, {"000-SEG.dcm": b"seg"})
    spool.finish(key, {"results": ["SEG"]}, keep_results=True)
    assert (tmp_path / "results" / key / "000-SEG.dcm").read_bytes() == b"seg"
    assert spool.is_done(key)
    assert spool.ready(quiet_s=0) == []


def test_identifying_values_are_redacted_and_uids_hashed() -> None:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "ID12345", "19700101"
    values = phi_values([ds])
    message = "cannot decode Doe^Jane (ID12345, born 19700101); Jane was here"
    cleaned = redact(message, values)
    for value in ("Doe", "Jane", "ID12345", "19700101"):
        assert value not in cleaned
    assert short_uid("1.2.840.1") == short_uid("1.2.840.1") != short_uid("1.2.840.2")
    assert "1.2.840" not in short_uid("1.2.840.1")


def test_stow_bodies_split_into_dicom_parts_and_bad_ones_are_named() -> None:
    part = b"\0" * 128 + b"DICM" + b"rest"
    body, content_type = encode_multipart([part, part])
    assert split_multipart(body, content_type) == [part, part]
    with pytest.raises(DataError, match="multipart/related"):
        split_multipart(body, "application/zip")
    with pytest.raises(DataError, match="boundary"):
        split_multipart(body, 'multipart/related; type="application/dicom"')
    bad, content_type = encode_multipart([part, b"not dicom at all"])
    with pytest.raises(DataError, match="part 2 is not a DICOM"):
        split_multipart(bad, content_type)
