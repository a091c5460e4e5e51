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
        ({"Modality": "MR", "EchoTime": "4.6"}, Modality.MR_T1_IN),
        ({"Modality": "MR", "EchoTime": "2.3"}, Modality.MR_T1_OUT),
        ({"Modality": "MR", "EchoTime": "2.3", "MagneticFieldStrength": "3"}, Modality.MR_T1_IN),
        ({"Modality": "MR", "EchoTime": "85"}, Modality.MR_T2SPIR),
    ],
)
def test_modality_from_tags(tags: dict, expected: Modality) -> None:
    decision = infer_modality(tags)
    assert decision.modality is expected
    assert decision.certain
    assert decision.reason


def test_contradictory_tags_are_not_guessed() -> None:
    decision = infer_modality(
        {"Modality": "MR", "SeriesDescription": "T1 in-phase", "EchoTime": "2.3"}
    )
    assert decision.modality is Modality.UNKNOWN
    assert not decision.certain
    assert any("in" in c for c in decision.conflicts)


@pytest.mark.parametrize(
    "tags", [{}, {"Modality": "PT"}, {"Modality": "MR"}, {"Modality": "MR", "EchoTime": "3.4"}]
)
def test_unrecognised_is_unknown_with_reason(tags: dict) -> None:
    decision = infer_modality(tags)
    assert decision.modality is Modality.UNKNOWN
    assert decision.reason


def test_echo_phase_at_1_5_tesla() -> None:
    assert phase_from_echo_time(4.6) is Modality.MR_T1_IN
    assert phase_from_echo_time(2.25) is Modality.MR_T1_OUT
    assert phase_from_echo_time(6.7) is Modality.MR_T1_OUT
