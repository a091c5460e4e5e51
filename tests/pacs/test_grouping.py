"""The node's grouping decision: pure, no spool, no clock."""

from __future__ import annotations

from organseg.ensemble.assembly import stacked_modalities
from organseg.io.volume import Modality
from organseg.pacs.grouping import SpooledSeries, missing_reason, plan

IN, OUT, T2 = Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR
T1 = stacked_modalities("stack", False)
QUIET, WAIT = 5.0, 120.0


def entry(key: str, study: str, sequence: Modality | None, arrived: float, done: bool = False):
    return SpooledSeries(key * 20, study, sequence, arrived, done)


def test_what_a_model_stacks() -> None:
    assert stacked_modalities("separate", True) == frozenset()
    assert stacked_modalities("stack", False) == {IN, OUT}
    assert stacked_modalities("stack", True) == {IN, OUT, T2}


def test_without_stacking_every_quiet_series_goes_alone_as_before() -> None:
    series = [entry("a", "s1", IN, 0.0), entry("b", "s1", OUT, 0.0), entry("c", "", None, 99.0)]
    result = plan(series, frozenset(), QUIET, WAIT, now=100.0)
    assert result.alone == ["a" * 20, "b" * 20]  # c is still arriving
    assert not (result.ready)
    assert not (result.waiting)
    assert not (result.expired)


def test_a_study_is_ready_once_both_phases_are_quiet_in_either_order() -> None:
    for first, second in ((IN, OUT), (OUT, IN)):
        series = [entry("a", "s1", first, 0.0), entry("b", "s1", second, 10.0)]
        assert plan(series, T1, QUIET, WAIT, now=12.0).waiting  # b is still arriving
        result = plan(series, T1, QUIET, WAIT, now=16.0)
        (group,) = result.ready
        assert sorted(group.keys) == ["a" * 20, "b" * 20]
        assert group.primary == ("a" if first is IN else "b") * 20
        assert not result.alone


def test_other_series_and_other_studies_do_not_join_a_group() -> None:
    series = [
        entry("a", "s1", IN, 0.0),
        entry("b", "s2", OUT, 0.0),  # another study's out-of-phase
        entry("c", "s1", T2, 0.0),  # not stacked without t2_channel: alone
        entry("d", "s1", None, 0.0),  # CT, or a sequence the headers leave open: alone
    ]
    result = plan(series, T1, QUIET, WAIT, now=10.0)
    assert sorted(result.alone) == ["c" * 20, "d" * 20]
    assert [g.study for g in result.waiting] == ["s1", "s2"]
    assert [g.missing for g in result.waiting] == [[OUT], [IN]]


def test_a_missing_companion_expires_the_wait_counted_from_the_first_quiet_series() -> None:
    series = [entry("a", "s1", IN, 0.0)]
    assert plan(series, T1, QUIET, WAIT, now=QUIET + WAIT - 1).waiting
    (group,) = plan(series, T1, QUIET, WAIT, now=QUIET + WAIT).expired
    assert group.missing == [OUT]
    reason = missing_reason(group, "mc", WAIT)
    assert "needs the T1 out-of-phase series of this study" in reason
    assert f"series uid:{'a' * 10} (MR-T1-in)" in reason
    assert "120 s" in reason


def test_t2_channel_needs_all_three_and_names_both_missing() -> None:
    stacked = stacked_modalities("stack", True)
    series = [entry("a", "s1", OUT, 0.0)]
    (group,) = plan(series, stacked, QUIET, WAIT, now=1000.0).expired
    assert group.missing == [IN, T2]
    assert "needs the T1 in-phase series and the T2-SPIR series of this study" in missing_reason(
        group, "mc", WAIT
    )
    series += [entry("b", "s1", IN, 0.0), entry("c", "s1", T2, 0.0)]
    assert len(plan(series, stacked, QUIET, WAIT, now=1000.0).ready) == 1


def test_doubled_sequences_are_handed_on_for_assembly_to_refuse() -> None:
    series = [entry("a", "s1", IN, 0.0), entry("b", "s1", IN, 1.0), entry("c", "s1", OUT, 2.0)]
    (group,) = plan(series, T1, QUIET, WAIT, now=10.0).ready
    assert len(group.keys) == 3
    assert group.primary is None  # two in-phase series: no series the answer could lie on


def test_delivered_series_go_alone_and_series_without_a_study_never_group() -> None:
    series = [
        entry("a", "s1", OUT, 0.0, done=True),  # a late instance of a series used as a channel
        entry("b", "", IN, 0.0),
        entry("c", "", OUT, 0.0),
    ]
    result = plan(series, T1, QUIET, WAIT, now=1000.0)
    assert result.alone == ["a" * 20]
    assert len(result.expired) == 2
    assert "no StudyInstanceUID" in missing_reason(result.expired[0], "mc", WAIT)


def test_what_a_served_model_segments_alone_is_read_from_its_listing_over_http_and_grpc() -> None:
    """A stacked sequence the model also serves by itself (T2-SPIR with a T2 member) is segmented
    alone too; the T1 phases never are, and a modality this version does not know is left out."""
    from google.protobuf.json_format import MessageToDict

    from organseg.pacs.stacking import _listed
    from organseg.serve.proto import segmentation_pb2 as pb

    ensembles = [{"modality": m} for m in ("MR-T1-in", "MR-T2SPIR", "MR-T9-future")]
    http = {"name": "mc", "t1_mode": "stack", "t2_channel": True, "ensembles": ensembles}
    grpc = pb.ListModelsResponse(
        name="mc",
        t1_mode="stack",
        t2_channel=True,
        ensembles=[pb.EnsembleInfo(**e) for e in ensembles],
    )
    for listing in (http, MessageToDict(grpc, preserving_proto_field_name=True)):
        facts = _listed(listing)
        assert (facts.ensemble, facts.stacked, facts.serves) == ("mc", {IN, OUT, T2}, {IN, T2})
        assert facts.also_alone == {T2}
    channel_only = _listed({**http, "ensembles": ensembles[:1]})
    assert channel_only.also_alone == frozenset()
    assert _listed({**http, "t2_channel": False}).also_alone == frozenset()  # T2 alone as before
