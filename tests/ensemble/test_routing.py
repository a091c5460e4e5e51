import numpy as np
import pytest

from organseg.ensemble.routing import ModalityError, decide_modality
from organseg.io.volume import Modality, Volume


def _volume(meta=None, modality=Modality.UNKNOWN) -> Volume:
    return Volume(np.zeros((2, 4, 4), np.int16), modality=modality, meta=meta or {})


def test_header_decides() -> None:
    decision = decide_modality(_volume({"Modality": "CT", "ProtocolName": "T2SPIR"}))
    assert decision.modality is Modality.CT
    assert decision.reason == "DICOM Modality=CT"


def test_explicit_request_must_not_contradict_the_header() -> None:
    with pytest.raises(ModalityError, match="contradicts"):
        decide_modality(_volume({"Modality": "CT"}), "MR-T2SPIR")
    agreed = decide_modality(_volume({"Modality": "CT"}), "CT")
    assert agreed.modality is Modality.CT
    assert "header agrees" in agreed.reason


def test_request_decides_when_there_is_no_header() -> None:
    decision = decide_modality(_volume(), "t2spir")
    assert decision.modality is Modality.MR_T2SPIR
    assert decision.source == "request"
    assert decision.confidence is None


def test_request_must_be_one_the_header_allows() -> None:
    with pytest.raises(ModalityError, match="contradicts the DICOM header"):
        decide_modality(_volume({"Modality": "MR"}), "CT")
    with pytest.raises(ModalityError, match="one of MR-T1-in, MR-T1-out"):
        decide_modality(_volume({"Modality": "MR", "EchoTime": "2.3"}), "MR-T2SPIR")
    decision = decide_modality(_volume({"Modality": "MR", "EchoTime": "2.3"}), "MR-T1-out")
    assert decision.modality is Modality.MR_T1_OUT


def test_recorded_modality_is_used_last() -> None:
    decision = decide_modality(_volume(modality=Modality.MR_T1_IN))
    assert decision.modality is Modality.MR_T1_IN
    assert "recorded" in decision.reason
    assert decision.source == "file"


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, "cannot tell the modality"),
        ({"Modality": "PT"}, "not CT or MR"),
        (
            {
                "Modality": "MR",
                "SeriesDescription": "T1 in phase",
                "EchoTime": "2.3",
                "MagneticFieldStrength": "1.5",
            },
            "disagree",
        ),
        # the sequence is not established and there is no classifier to ask
        ({"Modality": "MR", "EchoTime": "2.3"}, "no modality classifier"),
    ],
)
def test_never_guesses(meta: dict, message: str) -> None:
    with pytest.raises(ModalityError, match=message):
        decide_modality(_volume(meta))


def test_unknown_requested_modality() -> None:
    from organseg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown modality"):
        decide_modality(_volume(), "PET")
    with pytest.raises(ModalityError, match="cannot be segmented"):
        decide_modality(_volume(), "unknown")
