"""The node with a model that stacks T1 in- and out-of-phase (and the registered T2-SPIR, which it
may also segment alone): spool and node cores, in-process model, no network listener (a delivery to
a closed port stands for a PACS that is down)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.io.privacy import short_uid
from organseg.io.volume import Modality
from organseg.pacs.delivery import CStoreDestination
from organseg.pacs.grouping import series_info
from organseg.pacs.node import SeriesNode, make_backend
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


# -- T2-SPIR as the third channel, and segmented alone too when the model serves it ------------------
@pytest.fixture(scope="module")
def t2_broken_model(t2_stack_model: Path, tmp_path_factory) -> Path:
    """:func:`t2_stack_model` whose T2-SPIR member's weights file holds the T1 member's network (a
    damaged model directory): the member cannot load, so every T2-SPIR series alone is refused."""
    import shutil

    from organseg.ensemble.spec import load_spec

    model_dir = tmp_path_factory.mktemp("t2-broken") / "model"
    shutil.copytree(t2_stack_model, model_dir)
    t1, t2 = load_spec(model_dir).members
    shutil.copyfile(model_dir / t1.weights, model_dir / t2.weights)
    return model_dir


@pytest.fixture(scope="module")
def t2_expected(t2_stack_model: Path, synth_root: Path, stack_tools) -> dict[str, np.ndarray]:
    """In-process predictions per source file: T1 in-phase from the three series in one call, and
    T2-SPIR alone (as any lone series)."""
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io.dicom import read_dicom_series

    folders = _three_folders(synth_root / "Train_Sets" / "MR" / "1")
    t1_in, t1_out, t2 = (read_dicom_series(f, order="geometry") for f in folders)
    predictor = EnsemblePredictor(t2_stack_model, device="cpu")
    stacked = predictor.predict(t1_in, None, t1_out, t2).labels
    alone = predictor.predict(read_dicom_series(folders[2], order="geometry"), None).labels
    masks = {}
    for name, labels, folder in (("t1", stacked, folders[0]), ("t2", alone, folders[2])):
        masks[name] = stack_tools.mask_by_instance(labels, sorted(folder.glob("*.dcm")))
        assert 0.01 < masks[name].mean() < 0.5, "the test model must predict a non-trivial mask"
    return masks


def _three_folders(mr: Path) -> list[Path]:
    t1 = mr / "T1DUAL" / "DICOM_anon"
    return [t1 / "InPhase", t1 / "OutPhase", mr / "T2SPIR" / "DICOM_anon"]


def _three_series(synth_root: Path, tmp_path: Path, stack_tools, tag: str):
    mr = synth_root / "Train_Sets" / "MR" / "1"
    return stack_tools.copy_study(_three_folders(mr), tmp_path / tag, tag)


def _segs(folder: Path) -> dict[str, pydicom.Dataset]:
    """The results' SEGs by the series they reference."""
    segs = [pydicom.dcmread(p) for p in sorted(folder.glob("*-SEG.dcm"))]
    return {str(s.ReferencedSeriesSequence[0].SeriesInstanceUID): s for s in segs}


def _done(root: Path, key: str) -> dict:
    return json.loads((root / "done" / f"{key}.json").read_text())


def test_a_t2_the_model_also_serves_alone_gets_its_own_seg_with_the_stacked_one_even_after_a_crash(
    t2_stack_model, t2_expected, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    backend = make_backend(local=t2_stack_model, device="cpu")
    facts = backend.stacking.known()
    assert facts.also_alone == {Modality.MR_T2SPIR}
    t1_in, t1_out, t2 = _three_series(synth_root, tmp_path, stack_tools, "three")
    root = tmp_path / "spool"
    _spool(Spool(root), t2.files + t1_out.files + t1_in.files)
    in_key, out_key, t2_key = (key_of(s.series_uid) for s in (t1_in, t1_out, t2))

    # the PACS is down: both series' results wait in the primary's one outbox
    down = CStoreDestination("PACS", "127.0.0.1", pacs_tools.free_port())
    node = SeriesNode(
        Spool(root), backend.segment, [down], quiet_s=QUIET, stacking=backend.stacking
    )
    assert node.poll(now=time.time()) == []  # not quiet yet
    (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "waiting"
    outbox = root / "outbox" / in_key
    built = {k: s.SOPInstanceUID for k, s in _segs(outbox).items()}
    assert set(built) == {t1_in.series_uid, t2.series_uid}
    assert not (root / "outbox" / t2_key).exists()

    # restarted with no destination: the same results (same UIDs) are delivered, all three done
    node = SeriesNode(Spool(root), backend.segment, [], quiet_s=QUIET, stacking=backend.stacking)
    (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "delivered", outcome.detail
    segs = _segs(root / "results" / in_key)
    assert {k: s.SOPInstanceUID for k, s in segs.items()} == built
    t1_mask = pacs_tools.seg_mask(segs[t1_in.series_uid], t1_in.sop_uids)
    assert np.array_equal(t1_mask, t2_expected["t1"])
    t2_mask = pacs_tools.seg_mask(segs[t2.series_uid], t2.sop_uids)
    assert np.array_equal(t2_mask, t2_expected["t2"])

    of = f"series uid:{in_key[:10]}"
    assert _done(root, out_key)["outcome"] == f"used as channel of {of}"
    record = _done(root, t2_key)
    assert record["outcome"] == f"segmented alone and used as channel of {of}"
    assert record["segmented_alone"] is True
    t2_uid = segs[t2.series_uid].SOPInstanceUID
    assert record["results"] == [f"SEG {short_uid(t2_uid)}"]
    assert len(_done(root, in_key)["results"]) == 1
    assert not [p for kind in ("incoming", "work", "outbox") for p in (root / kind).iterdir()]


def test_a_t2_only_stacked_as_a_channel_gets_no_seg_of_its_own(
    t2_channel_model, t2_expected, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    backend = make_backend(local=t2_channel_model, device="cpu")
    assert backend.stacking.known().also_alone == frozenset()
    t1_in, t1_out, t2 = _three_series(synth_root, tmp_path, stack_tools, "channel")
    root = tmp_path / "spool"
    _spool(Spool(root), t1_in.files + t2.files + t1_out.files)
    node = SeriesNode(Spool(root), backend.segment, [], quiet_s=QUIET, stacking=backend.stacking)
    (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "delivered", outcome.detail
    in_key = key_of(t1_in.series_uid)
    segs = _segs(root / "results" / in_key)
    assert list(segs) == [t1_in.series_uid]  # as before: one SEG, over T1 in-phase
    mask = pacs_tools.seg_mask(segs[t1_in.series_uid], t1_in.sop_uids)
    assert np.array_equal(mask, t2_expected["t1"])  # the same T1 member's weights
    for series in (t1_out, t2):
        record = _done(root, key_of(series.series_uid))
        assert record["outcome"] == f"used as channel of series uid:{in_key[:10]}"
        assert "segmented_alone" not in record


def test_a_t2_refused_alone_keeps_the_stacked_seg_and_records_why(
    t2_broken_model, t2_expected, synth_root, stack_tools, pacs_tools, tmp_path, caplog
) -> None:
    backend = make_backend(local=t2_broken_model, device="cpu")
    t1_in, t1_out, t2 = _three_series(synth_root, tmp_path, stack_tools, "refused")
    root = tmp_path / "spool"
    _spool(Spool(root), t1_out.files + t1_in.files + t2.files)
    node = SeriesNode(Spool(root), backend.segment, [], quiet_s=QUIET, stacking=backend.stacking)
    with caplog.at_level("WARNING", logger="organseg.pacs"):
        (outcome,) = node.poll(now=time.time() + QUIET + 1)
    assert outcome.status == "delivered", outcome.detail
    in_key, t2_key = key_of(t1_in.series_uid), key_of(t2.series_uid)
    segs = _segs(root / "results" / in_key)
    assert list(segs) == [t1_in.series_uid]  # the valid stacked answer is not lost
    mask = pacs_tools.seg_mask(segs[t1_in.series_uid], t1_in.sop_uids)
    assert np.array_equal(mask, t2_expected["t1"])

    record = _done(root, t2_key)
    assert record["segmented_alone"] is False
    assert "weights do not fit" in record["refused_alone"]
    assert "refused" in record["outcome"]
    assert f"series uid:{t2_key[:10]} (a channel) was not segmented alone" in caplog.text
    assert "weights do not fit" in caplog.text
    text = json.dumps(record) + caplog.text
    for uid in (t1_in.study_uid, t2.series_uid, *t2.sop_uids):
        assert uid not in text
    assert not [p for kind in ("incoming", "work", "outbox") for p in (root / kind).iterdir()]


def test_a_group_refused_in_process_tells_a_dicom_sender_what_to_send(
    t2_stack_model: Path, synth_root: Path, stack_tools, tmp_path: Path
) -> None:
    """The node's own words, not the segment route's (no zip, no request parts): a group without the
    T2-SPIR its model stacks asks for the study's missing series."""
    from organseg.errors import DataError
    from organseg.io.received import read_received_series

    t1_in, t1_out = _study(synth_root, tmp_path, stack_tools, "hints")
    folders = [Path(t1_in.files[0]).parent, Path(t1_out.files[0]).parent]
    series = [read_received_series(folder) for folder in folders]
    stacking = make_backend(local=t2_stack_model, device="cpu").stacking
    assert stacking is not None
    with pytest.raises(DataError) as refused:
        stacking.segment_group(series, folders)
    message = str(refused.value)
    assert (
        "not the T2-SPIR series: add it to this node (send the study's missing series)" in message
    )
    assert "zip" not in message
    assert "part" not in message
