"""organseg as a DICOM node and a DICOMweb client against a real Orthanc, on the real CT case."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.cli import main

pytestmark = pytest.mark.sample
MARKER = "QQMARKER7Z"
QUIET_S = "1"


@pytest.fixture(scope="module")
def node(orthanc, ct_model: Path, pacs_tools, tmp_path_factory):
    """`organseg dicom listen` sending SEGs back to Orthanc; registered in Orthanc as 'organseg'."""
    root = tmp_path_factory.mktemp("node")
    listener = pacs_tools.start_listener(
        root / "spool",
        root / "listener.log",
        "--local", str(ct_model), "--device", "cpu", "--quiet-period", QUIET_S,
        "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--outputs", "seg,overlay-sc",
    )  # fmt: skip
    orthanc.register("organseg", "ORGANSEG", listener.port)
    try:
        yield listener
    finally:
        listener.stop()


def _check_references(seg: pydicom.Dataset, study: str, series: str, sop_uids: list[str]) -> None:
    assert seg.Modality == "SEG"
    assert seg.StudyInstanceUID == study
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} <= set(
        sop_uids
    )


def test_orthanc_forwards_the_real_case_and_gets_the_seg_back(
    orthanc, node, ct_files, reference_mask, pacs_tools
) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in ct_files]
    uids = [str(h.SOPInstanceUID) for h in headers]
    series_id = orthanc.upload(ct_files)
    orthanc.send_series("organseg", series_id)  # Orthanc's C-STORE to the node

    (seg,) = orthanc.wait_for_segs(headers[0].SeriesInstanceUID, headers[0].StudyInstanceUID)
    _check_references(seg, headers[0].StudyInstanceUID, headers[0].SeriesInstanceUID, uids)
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    mask = pacs_tools.seg_mask(seg, uids)
    assert mask.shape == reference_mask.shape
    assert np.array_equal(mask, reference_mask)

    # the colour overlays, for viewers without DICOM-SEG: Secondary Capture in the same study
    with orthanc.http as http:
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": headers[0].StudyInstanceUID,
                 "SeriesDescription": "organseg overlay"}}  # fmt: skip
        overlays = http.post("/tools/find", json=query).json()
        assert 1 <= len(overlays) <= 6
        sc = pydicom.dcmread(io.BytesIO(http.get(f"/instances/{overlays[0]}/file").content))
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.pixel_array.shape == (512, 512, 3)


def test_echo(node) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ORGANSEG")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_dicomweb_fetch_segment_and_stow(
    orthanc, ct_model, ct_files, reference_mask, pacs_tools, tmp_path
) -> None:
    copy = pacs_tools.copy_series(ct_files, tmp_path / "series", "dicomweb")
    orthanc.upload(copy.files)
    argv = ["predict", "--dicomweb", orthanc.dicomweb, "--study", copy.study_uid]
    argv += ["--series", copy.series_uid, "--stow", "--local", str(ct_model), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0

    (seg,) = orthanc.wait_for_segs(copy.series_uid, copy.study_uid, timeout=10)
    _check_references(seg, copy.study_uid, copy.series_uid, copy.sop_uids)
    assert np.array_equal(pacs_tools.seg_mask(seg, copy.sop_uids), reference_mask)


@pytest.mark.parametrize("codec", ["jpeg-ls", "jpeg2000", "rle"])
def test_compressed_series_segment_like_the_uncompressed_one(
    codec, orthanc, node, compressed_copies, reference_mask, pacs_tools
) -> None:
    copy = compressed_copies[codec]
    syntax = pydicom.dcmread(copy.files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert syntax.is_compressed, f"{codec} copy is {syntax.name}"
    pacs_tools.send_files(node.port, copy.files)

    (seg,) = orthanc.wait_for_segs(copy.series_uid, copy.study_uid)
    assert np.array_equal(pacs_tools.seg_mask(seg, copy.sop_uids), reference_mask)


@pytest.mark.slow
def test_killed_mid_series_restart_ends_with_one_complete_seg(
    orthanc, ct_model, ct_files, reference_mask, pacs_tools, tmp_path
) -> None:
    copy = pacs_tools.copy_series(ct_files, tmp_path / "series", "restart")
    store, log = tmp_path / "spool", tmp_path / "listener.log"
    args = ["--local", str(ct_model), "--device", "cpu"]
    args += ["--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"]
    first = pacs_tools.start_listener(store, log, *args, "--quiet-period", "30")
    half = len(copy.files) // 2
    pacs_tools.send_files(first.port, copy.files[:half])  # acknowledged = on disk
    first.kill()  # SIGKILL in the middle of the series: no clean shutdown
    assert len(list((store / "incoming").rglob("*.dcm"))) == half

    # the restart gives the interrupted series a fresh quiet period before it counts as complete
    second = pacs_tools.start_listener(store, log, *args, "--quiet-period", "2")
    try:
        pacs_tools.send_files(second.port, copy.files[half:])
        orthanc.wait_for_segs(copy.series_uid, copy.study_uid)
        # no second SEG (e.g. of a part of the series): the node has recorded the series delivered
        # and holds nothing more of it, so nothing else can come; only then is Orthanc asked again
        deadline = time.monotonic() + 60
        while not list((store / "done").glob("*.json")) or list(
            (store / "incoming").rglob("*.dcm")
        ):
            assert time.monotonic() < deadline, "the node never recorded the series delivered"
            time.sleep(0.1)
        segs = orthanc.segs_for(copy.series_uid, copy.study_uid)
    finally:
        second.stop()
    assert len(segs) == 1
    assert np.array_equal(pacs_tools.seg_mask(segs[0], copy.sop_uids), reference_mask)
    assert not list((store / "incoming").rglob("*.dcm"))
    assert len(list((store / "done").glob("*.json"))) == 1


def test_corrupt_instance_quarantines_its_series_and_the_next_succeeds(
    orthanc, node, ct_model, ct_files, pacs_tools, tmp_path, capfd
) -> None:
    """Also the privacy check: these series' PatientName/PatientID hold a marker, and after good,
    corrupt and ignored series (by C-STORE and by DICOMweb) no log line, error message or spool file
    name carries it."""
    files = ct_files[30:42]
    bad = pacs_tools.copy_series(files, tmp_path / "bad", "corrupt", patient=MARKER)
    broken = pydicom.dcmread(bad.files[5])
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]
    broken.save_as(bad.files[5], enforce_file_format=True)
    pacs_tools.send_files(node.port, bad.files)

    quarantine = node.store / "quarantine"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(quarantine.glob("*/reason.txt")):
        time.sleep(0.3)
    (reason_file,) = quarantine.glob("*/reason.txt")
    reason = reason_file.read_text()
    assert "truncated" in reason or "corrupt" in reason, reason
    assert len(list(reason_file.parent.glob("*.dcm"))) == len(files)  # nothing dropped

    good = pacs_tools.copy_series(files, tmp_path / "good", "after-corrupt", patient=MARKER)
    pacs_tools.send_files(node.port, good.files)
    (seg,) = orthanc.wait_for_segs(good.series_uid, good.study_uid)
    assert str(seg.PatientID) == MARKER  # the SEG belongs to its patient in the PACS
    assert orthanc.segs_for(bad.series_uid, bad.study_uid) == []

    # another modality: acknowledged, ignored with one log line
    other = pacs_tools.copy_series(
        ct_files[:3], tmp_path / "other", "other-modality", patient=MARKER
    )
    for path in other.files:
        ds = pydicom.dcmread(path)
        ds.Modality = "PT"
        ds.save_as(path, enforce_file_format=True)
    pacs_tools.send_files(node.port, other.files)
    # the DICOMweb paths' errors: a corrupt series, a study without CT/MR
    orthanc.upload(bad.files + other.files)
    capfd.readouterr()
    for study, series in ((bad.study_uid, bad.series_uid), (other.study_uid, None)):
        argv = ["predict", "--dicomweb", orthanc.dicomweb, "--study", study, "--stow"]
        argv += ["--series", series] if series else []
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--local", str(ct_model), "--device", "cpu"])
        assert exit_info.value.code == 2
    errors = capfd.readouterr()
    assert "error:" in errors.err
    assert MARKER not in errors.out + errors.err

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ignored" not in node.log.read_text():
        time.sleep(0.2)
    text = node.log.read_text(errors="replace")
    for event in ("ignored", "quarantined", "delivered"):
        assert event in text
    assert MARKER.lower() not in text.lower()
    for path in node.store.rglob("*"):
        assert MARKER not in path.name
        if path.name == "reason.txt" or path.suffix == ".json":
            assert MARKER not in path.read_text()
