"""The node with a model that stacks T1 in- and out-of-phase: spool and node cores, in-process
model, no network listener (a delivery to a closed port stands for a PACS that is down)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.pacs.delivery import CStoreDestination
from organseg.pacs.node import SeriesNode, make_backend
from organseg.pacs.series import series_info
from organseg.pacs.spool import Spool, key_of

QUIET, WAIT = 2.0, 30.0


@pytest.fixture(scope="module")
def backend(stack_model: Path):
    return make_backend(local=stack_model, device="cpu")


@pytest.fixture(scope="module")
def reference(backend, synth_root: Path, stack_tools) -> np.ndarray:
    """The in-process multi-series prediction on the T1 in-phase files (file-name order)."""
    from organseg.io.dicom import read_dicom_series

    mr = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon"
    t1_in = read_dicom_series(mr / "InPhase", order="geometry")
    t1_out = read_dicom_series(mr / "OutPhase", order="geometry")
    prediction = backend.predictor.predict(t1_in, None, t1_out)
    mask = stack_tools.mask_by_instance(prediction.labels, sorted((mr / "InPhase").glob("*.dcm")))
    assert 0.01 < mask.mean() < 0.5, "the test model must predict a non-trivial mask"
    return mask


def _study(synth_root: Path, tmp_path: Path, stack_tools, tag: str):
    mr = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon"
    return stack_tools.copy_study([mr / "InPhase", mr / "OutPhase"], tmp_path / tag, tag)


def _spool(spool: Spool, files: list[Path]) -> None:
    """What the listener does per instance, in a shuffled arrival order."""
    files = list(files)
    random.Random(len(files)).shuffle(files)
    for path in files:
        ds = pydicom.dcmread(path)
        spool.add(ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes(), series_info(ds))


def _seg_mask(folder: Path, sop_uids: list[str], pacs_tools) -> np.ndarray:
    (seg_file,) = folder.glob("*-SEG.dcm")
    return pacs_tools.seg_mask(pydicom.dcmread(seg_file), sop_uids)


def test_a_study_crashing_mid_group_and_a_pacs_down_end_with_one_seg_and_both_series_done(
    backend, reference, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    t1_in, t1_out = _study(synth_root, tmp_path, stack_tools, "crash")
    root = tmp_path / "spool"
    spool = Spool(root)
    _spool(spool, t1_out.files + t1_in.files)
    in_key, out_key = key_of(t1_in.series_uid), key_of(t1_out.series_uid)
    assert json.loads((root / "meta" / f"{in_key}.json").read_text())["sequence"] == "MR-T1-in"
    assert t1_in.study_uid not in "".join(p.read_text() for p in (root / "meta").iterdir())

    down = CStoreDestination("PACS", "127.0.0.1", pacs_tools.free_port())  # nothing listens there
    node = SeriesNode(spool, backend.segment, [down], quiet_s=QUIET, stacking=backend.stacking)
    assert node.poll(now=time.time()) == []  # not quiet yet
    spool.claim(in_key)  # a crash after claiming the first series of the group
    node = SeriesNode(
        Spool(root), backend.segment, [down], quiet_s=QUIET, stacking=backend.stacking
    )
    (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "waiting"
    assert "unreachable" in outcome.detail
    assert (root / "outbox" / in_key).is_dir()
    assert (root / "work" / out_key).is_dir()

    # restarted without the dead destination: the built results are delivered, both series done
    node = SeriesNode(Spool(root), backend.segment, [], quiet_s=QUIET, stacking=backend.stacking)
    (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "delivered"
    assert np.array_equal(
        _seg_mask(root / "results" / in_key, t1_in.sop_uids, pacs_tools), reference
    )
    record = json.loads((root / "done" / f"{out_key}.json").read_text())
    assert record["used_as_channel_of"] == f"series uid:{in_key[:10]}"
    assert not [p for kind in ("incoming", "work", "outbox") for p in (root / kind).iterdir()]

    # a late instance of the series used as a channel: the "arrived after delivery" rule
    _spool(node.spool, t1_out.files[:1])
    (late,) = node.poll(now=time.time() + QUIET + 1)
    assert late.status == "quarantined"
    assert "after this series was segmented" in late.detail


def test_a_lone_phase_waits_then_is_quarantined_naming_the_missing_series(
    backend, synth_root, stack_tools, tmp_path
) -> None:
    t1_in, _ = _study(synth_root, tmp_path, stack_tools, "lone")
    spool = Spool(tmp_path / "spool")
    _spool(spool, t1_in.files)
    node = SeriesNode(
        spool, backend.segment, [], quiet_s=QUIET, stacking=backend.stacking, companion_wait_s=WAIT
    )
    start = time.time()
    assert node.poll(now=start + QUIET + WAIT - 2) == []  # waiting for its companion
    (outcome,) = node.poll(now=start + QUIET + WAIT + 1)
    assert outcome.status == "quarantined"
    key = key_of(t1_in.series_uid)
    assert f"series uid:{key[:10]} (MR-T1-in)" in outcome.detail
    assert "needs the T1 out-of-phase series of this study" in outcome.detail
    (quarantined,) = spool.quarantined()
    assert len(list(quarantined.folder.glob("*.dcm"))) == len(t1_in.files)
    assert not (spool.root / "results").exists()  # never segmented alone


def test_a_doubled_phase_quarantines_the_group_naming_both_series(
    backend, synth_root, stack_tools, tmp_path
) -> None:
    mr = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon"
    folders = [mr / "InPhase", mr / "InPhase", mr / "OutPhase"]
    copies = stack_tools.copy_study(folders, tmp_path / "doubled", "doubled")
    spool = Spool(tmp_path / "spool")
    _spool(spool, [f for c in copies for f in c.files])
    node = SeriesNode(spool, backend.segment, [], quiet_s=QUIET, stacking=backend.stacking)
    outcomes = node.poll(now=time.time() + QUIET + 1)
    assert [o.status for o in outcomes] == ["quarantined"] * 3
    tags = [f"series uid:{key_of(c.series_uid)[:10]}" for c in copies]
    for outcome in outcomes:
        assert "two T1 in-phase series" in outcome.detail
        assert all(tag in outcome.detail for tag in tags)
    assert len(spool.quarantined()) == 3
    assert not (spool.root / "results").exists()
