"""What the node knows of a served model is asked again now and then: a live model switch on the
server may change what it stacks, and the node must group the next study by the new answer."""

from __future__ import annotations

import logging

import pytest

from organseg.errors import OrgansegError
from organseg.io.volume import Modality
from organseg.pacs.stacking import ModelFacts, Stacking

T1 = frozenset({Modality.MR_T1_IN, Modality.MR_T1_OUT})


def _never(series, folders):  # the group segmenter is not asked here
    raise AssertionError("not called")


def test_a_served_model_is_asked_again_after_the_refresh_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[ModelFacts | Exception] = [
        OrgansegError("cannot reach the server"),
        ModelFacts("v1", T1, T1),
        ModelFacts("v2", frozenset(), frozenset({Modality.CT})),  # switched: stacks nothing
        OrgansegError("cannot reach the server"),
        ModelFacts("v3", T1, T1),
    ]
    asked: list[int] = []

    def learn() -> ModelFacts:
        asked.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    stacking = Stacking(learn, _never, refresh_s=60.0)
    with pytest.raises(OrgansegError):  # nothing known yet: the node keeps the series spooled
        stacking.known(now=0.0)
    assert stacking.known(now=1.0).ensemble == "v1"
    assert stacking.known(now=30.0).ensemble == "v1"  # within the period: not asked
    assert len(asked) == 2
    assert stacking.known(now=61.0).stacked == frozenset()  # the switch is seen
    with caplog.at_level(logging.WARNING, logger="organseg.pacs"):
        assert stacking.known(now=122.0).ensemble == "v2"  # unreachable: the last answer stands
    assert "keeping its last answer" in caplog.text
    assert stacking.known(now=150.0).ensemble == "v2"  # and it is not asked again at once
    assert stacking.known(now=183.0).ensemble == "v3"
    assert len(asked) == 5


def test_an_in_process_model_is_asked_once() -> None:
    asked: list[int] = []

    def learn() -> ModelFacts:
        asked.append(1)
        return ModelFacts("local", T1, T1)

    stacking = Stacking(learn, _never)
    for now in (0.0, 1e6, 2e6):
        assert stacking.known(now=now).stacked == T1
    assert len(asked) == 1
