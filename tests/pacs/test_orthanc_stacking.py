"""The DICOM node with a model that stacks T1 in- and out-of-phase, against a real Orthanc: a study's
two phases arrive as separate series (interleaved, shuffled) and come back as ONE DICOM-SEG over the
in-phase series; a phase whose companion never comes is quarantined naming it; CT is unchanged; with
T2-SPIR as a third channel that the model also serves alone, a second SEG comes back over T2-SPIR."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest

from organseg.pacs.spool import key_of

WAIT_S = "3"


@pytest.fixture(scope="module")
def stack_node(orthanc, stack_model: Path, pacs_tools, tmp_path_factory):
    """`organseg dicom listen --local <stacking model>` sending SEGs back to Orthanc."""
    root = tmp_path_factory.mktemp("stack-node")
    listener = pacs_tools.start_listener(
        root / "spool",
        root / "listener.log",
        "--local", str(stack_model), "--device", "cpu", "--quiet-period", "1",
        "--companion-wait-s", WAIT_S, "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
    )  # fmt: skip
    try:
        yield listener
    finally:
        listener.stop()


def _mr_study(synth_root: Path, tmp_path: Path, stack_tools, tag: str):
    mr = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon"
    return stack_tools.copy_study([mr / "InPhase", mr / "OutPhase"], tmp_path / tag, tag)


def _predicted(stack_model: Path, folders: list[Path], stack_tools) -> np.ndarray:
    """The in-process prediction (T1: both phases in one call) per file of ``folders[0]``."""
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io.dicom import read_dicom_series

    volumes = [read_dicom_series(f, order="geometry") for f in folders]
    prediction = EnsemblePredictor(stack_model, device="cpu").predict(
        volumes[0], None, *volumes[1:]
    )
    mask = stack_tools.mask_by_instance(prediction.labels, sorted(folders[0].glob("*.dcm")))
    assert 0.01 < mask.mean() < 0.5, "the test model must predict a non-trivial mask"
    return mask


def test_a_lone_phase_is_quarantined_then_a_study_of_two_series_gets_one_seg(
    orthanc, stack_node, stack_model, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    lone, _ = _mr_study(synth_root, tmp_path, stack_tools, "lone")
    pacs_tools.send_files(stack_node.port, lone.files)
    quarantine = stack_node.store / "quarantine"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list(quarantine.glob("*/reason.txt")):
        time.sleep(0.2)
    (reason_file,) = quarantine.glob("*/reason.txt")
    reason = reason_file.read_text()
    assert f"series uid:{key_of(lone.series_uid)[:10]} (MR-T1-in)" in reason
    assert "needs the T1 out-of-phase series of this study" in reason
    assert orthanc.segs_for(lone.series_uid, lone.study_uid) == []

    t1_in, t1_out = _mr_study(synth_root, tmp_path, stack_tools, "pair")
    files = t1_in.files + t1_out.files
    random.Random(3).shuffle(files)  # the two series interleaved, instances in any order
    pacs_tools.send_files(stack_node.port, files)

    (seg,) = orthanc.wait_for_segs(t1_in.series_uid, t1_in.study_uid, timeout=60)
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == t1_in.series_uid
    assert orthanc.segs_for(t1_out.series_uid, t1_out.study_uid) == []
    expected = _predicted(stack_model, [t1_in.files[0].parent, t1_out.files[0].parent], stack_tools)
    assert np.array_equal(pacs_tools.seg_mask(seg, t1_in.sop_uids), expected)

    done = stack_node.store / "done"
    record = json.loads((done / f"{key_of(t1_out.series_uid)}.json").read_text())
    assert record["used_as_channel_of"] == f"series uid:{key_of(t1_in.series_uid)[:10]}"
    assert "delivered_at" in record
    for path in stack_node.store.rglob("*"):  # hashes on disk, never the raw UIDs
        assert t1_in.study_uid not in path.name
        assert t1_in.series_uid not in path.name
        if path.suffix == ".json":
            assert t1_in.study_uid not in path.read_text()


def test_ct_through_the_stacking_node_is_segmented_alone_as_before(
    orthanc, stack_node, stack_model, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    source = synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon"
    ct = pacs_tools.copy_series(sorted(source.glob("*.dcm")), tmp_path / "ct", "stack-ct")
    pacs_tools.send_files(stack_node.port, ct.files)
    (seg,) = orthanc.wait_for_segs(ct.series_uid, ct.study_uid, timeout=60)
    expected = _predicted(stack_model, [ct.files[0].parent], stack_tools)
    assert np.array_equal(pacs_tools.seg_mask(seg, ct.sop_uids), expected)


def test_a_study_of_three_series_gets_the_stacked_seg_and_one_over_t2_when_the_model_serves_it(
    orthanc, t2_stack_model, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    """T1 in, T1 out and T2-SPIR by real C-STORE: a SEG over T1 in-phase (three channels) and, as
    the model also serves T2-SPIR alone, a SEG over the T2-SPIR series, both back in Orthanc."""
    mr = synth_root / "Train_Sets" / "MR" / "1"
    folders = [mr / "T1DUAL" / "DICOM_anon" / k for k in ("InPhase", "OutPhase")]
    folders.append(mr / "T2SPIR" / "DICOM_anon")
    t1_in, t1_out, t2 = stack_tools.copy_study(folders, tmp_path / "three", "orthanc-three")
    listener = pacs_tools.start_listener(
        tmp_path / "spool", tmp_path / "listener.log",
        "--local", str(t2_stack_model), "--device", "cpu", "--quiet-period", "1",
        "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
    )  # fmt: skip
    try:
        files = t1_in.files + t1_out.files + t2.files
        random.Random(4).shuffle(files)
        pacs_tools.send_files(listener.port, files)
        (t1_seg,) = orthanc.wait_for_segs(t1_in.series_uid, t1_in.study_uid, timeout=60)
        (t2_seg,) = orthanc.wait_for_segs(t2.series_uid, t2.study_uid, timeout=30)
    finally:
        listener.stop()
    expected = _predicted(t2_stack_model, folders, stack_tools)
    assert np.array_equal(pacs_tools.seg_mask(t1_seg, t1_in.sop_uids), expected)
    expected_t2 = _predicted(t2_stack_model, folders[2:], stack_tools)
    assert np.array_equal(pacs_tools.seg_mask(t2_seg, t2.sop_uids), expected_t2)
    assert orthanc.segs_for(t1_out.series_uid, t1_out.study_uid) == []
    record = json.loads((tmp_path / "spool" / "done" / f"{key_of(t2.series_uid)}.json").read_text())
    assert record["segmented_alone"] is True
