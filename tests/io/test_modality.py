import pytest

from organseg.io.modality import infer_modality, phase_from_echo_time
from organseg.io.volume import Modality


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (
            {"Modality": "CT", "ProtocolName": "T2SPIR"},
            Modality.CT,
        ),  # the real CHAOS CT case says this
        ({"Modality": "MR", "SeriesDescription": "T2SPIR", "EchoTime": "80"}, Modality.MR_T2SPIR),
        ({"Modality": "MR", "SeriesDescription": "T1_in_phase"}, Modality.MR_T1_IN),
        ({"Modality": "MR", "SeriesDescription": "T1 out-of-phase"}, Modality.MR_T1_OUT),
        ({"Modality": "MR", "EchoTime": "4.6", "MagneticFieldStrength": "1.5"}, Modality.MR_T1_IN),
        ({"Modality": "MR", "EchoTime": "2.3", "MagneticFieldStrength": "1.5"}, Modality.MR_T1_OUT),
        ({"Modality": "MR", "EchoTime": "2.3", "MagneticFieldStrength": "3"}, Modality.MR_T1_IN),
        ({"Modality": "MR", "EchoTime": "85", "RepetitionTime": "1800"}, Modality.MR_T2SPIR),
    ],
)
def test_modality_from_tags(tags: dict, expected: Modality) -> None:
    decision = infer_modality(tags)
    assert decision.modality is expected
    assert decision.certain
    assert decision.reason
    assert decision.source == "header"


def test_contradictory_tags_are_not_guessed() -> None:
    decision = infer_modality(
        {
            "Modality": "MR",
            "SeriesDescription": "T1 in-phase",
            "EchoTime": "2.3",
            "MagneticFieldStrength": "1.5",
        }
    )
    assert decision.modality is Modality.UNKNOWN
    assert not decision.certain
    assert any("in" in c for c in decision.conflicts)


@pytest.mark.parametrize(
    ("tags", "allowed"),
    [
        ({}, set()),
        ({"Modality": "PT"}, set()),
        ({"Modality": "MR"}, {Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR}),
        # a short echo without the field strength: in or out of phase is not established
        ({"Modality": "MR", "EchoTime": "2.3"}, {Modality.MR_T1_IN, Modality.MR_T1_OUT}),
        ({"Modality": "MR", "EchoTime": "4.6"}, {Modality.MR_T1_IN, Modality.MR_T1_OUT}),
        # between the two phases at 1.5 T
        (
            {"Modality": "MR", "EchoTime": "3.4", "MagneticFieldStrength": "1.5"},
            {Modality.MR_T1_IN, Modality.MR_T1_OUT},
        ),
        # a long echo without a long repetition time: T2 weighting is not established
        ({"Modality": "MR", "EchoTime": "85"}, {Modality.MR_T2SPIR}),
        ({"Modality": "MR", "EchoTime": "85", "RepetitionTime": "400"}, {Modality.MR_T2SPIR}),
    ],
)
def test_what_headers_do_not_establish_is_unknown(tags: dict, allowed: set) -> None:
    decision = infer_modality(tags)
    assert decision.modality is Modality.UNKNOWN
    assert decision.reason
    assert decision.allowed == allowed


def test_text_against_what_the_echo_allows_is_a_conflict() -> None:
    decision = infer_modality({"Modality": "MR", "SeriesDescription": "T2SPIR", "EchoTime": "2.3"})
    assert decision.modality is Modality.UNKNOWN
    assert decision.conflicts


def test_echo_phase_at_1_5_and_3_tesla() -> None:
    assert phase_from_echo_time(4.6, 1.5) is Modality.MR_T1_IN
    assert phase_from_echo_time(2.25, 1.5) is Modality.MR_T1_OUT
    assert phase_from_echo_time(6.7, 1.5) is Modality.MR_T1_OUT
    assert phase_from_echo_time(2.3, 3.0) is Modality.MR_T1_IN
    assert phase_from_echo_time(1.15, 3.0) is Modality.MR_T1_OUT
    assert phase_from_echo_time(30.0, 1.5) is None  # too many cycles to trust


@pytest.mark.parametrize(
    "tags",
    [
        {"Modality": "MR", "SeriesDescription": "T2 SPIR DOE^JANE T2SPIR T2TSE"},
        {"Modality": "MR", "SeriesDescription": "DOE^JANE", "EchoTime": "4.4"},
        {"Modality": "MR", "ProtocolName": "T1 in phase DOE^JANE", "EchoTime": "90",
         "RepetitionTime": "3000"},
        {"Modality": "MR", "SeriesDescription": "T1 opp phase DOE^JANE", "EchoTime": "2.3",
         "MagneticFieldStrength": "1.5"},
        {"Modality": "DOE^JANE"},
    ],
)  # fmt: skip
def test_reasons_name_the_sequence_never_the_free_text(tags: dict) -> None:
    """Descriptions are free text that sites fill with names and accession numbers; reasons reach
    answers and logs, so they name the tag and the recognised sequence only."""
    decision = infer_modality(tags)
    words = " ".join([decision.reason, *decision.conflicts])
    assert "DOE" not in words, words
    if decision.modality is Modality.MR_T2SPIR:
        assert "SeriesDescription names T2-SPIR" in words
