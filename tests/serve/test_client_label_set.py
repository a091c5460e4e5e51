"""A remote answer gets the label set of the served model that answered (what the client codes its
DICOM-SEG and colours its overlay with), asked from the listing; a model switch in between is noticed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from organseg.ensemble.describe import describe_label_set
from organseg.ensemble.prediction import Prediction
from organseg.io.volume import Geometry, Modality, Volume
from organseg.labels import chaos_label_set
from organseg.serve.client import ServiceError, _RemoteBackend
from organseg.synth.abdomen import ABDOMEN_LABELS, abdomen_label_set


class _Listed(_RemoteBackend):
    """A backend whose server describes the given listings, one per ``models()`` call."""

    def __init__(self, *listings: dict[str, Any]) -> None:
        self.listings = list(listings)
        self.asked = 0

    def describe(self) -> str:
        return "HTTP test"

    def models(self) -> dict[str, Any]:
        self.asked += 1
        return self.listings.pop(0)


def _listing(version: str, labels) -> dict[str, Any]:
    return {"model_version": version, "label_set": describe_label_set(labels)}


def _answer(version: str, organs) -> Prediction:
    labels = Volume(np.zeros((2, 4, 4), np.uint8), Geometry((1, 1, 1), (0, 0, 0)), Modality.CT)
    return Prediction(labels, Modality.CT, "requested explicitly", list(organs), ["a"],
                      dict.fromkeys(organs, 0.0), {}, model_version=version)  # fmt: skip


def test_the_answering_models_label_set_is_attached() -> None:
    backend = _Listed(_listing("v1", abdomen_label_set()))
    for _ in range(2):  # asked once
        assert backend.attach_label_set(_answer("v1", ABDOMEN_LABELS)).label_set == (
            abdomen_label_set()
        )
    assert backend.asked == 1
    chaos = _Listed(_listing("c", chaos_label_set()))
    assert chaos.attach_label_set(_answer("c", ["liver"])).label_set is None


def test_a_switched_model_is_asked_again() -> None:
    backend = _Listed(_listing("v1", chaos_label_set()), _listing("v2", abdomen_label_set()))
    assert backend.attach_label_set(_answer("v1", ["liver"])).label_set is None
    switched = backend.attach_label_set(_answer("v2", ABDOMEN_LABELS))
    assert switched.label_set == abdomen_label_set()
    assert backend.asked == 2


def test_an_answer_from_a_model_no_longer_described_is_refused_unless_its_labels_fit() -> None:
    # a switch rolling out between models of one label set: the listing stands for the answer
    rolling = _Listed(_listing("v2", abdomen_label_set()), _listing("v2", abdomen_label_set()))
    assert rolling.attach_label_set(_answer("v1", ABDOMEN_LABELS)).label_set == abdomen_label_set()
    # another label set: no label set is guessed for the answer
    other = _Listed(_listing("v2", chaos_label_set()), _listing("v2", chaos_label_set()))
    with pytest.raises(ServiceError, match=r"answered with model v1 but now serves v2"):
        other.attach_label_set(_answer("v1", ABDOMEN_LABELS))
