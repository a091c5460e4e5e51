"""A served model's label set, as ``GET /v1/models`` and ListModels describe it, read back exactly by a
client: what it codes a remote answer's DICOM-SEG and colours its overlay with."""

from __future__ import annotations

from dataclasses import replace

import pytest

from organseg.ensemble.describe import describe_label_set, label_set_from_description
from organseg.labels import Code, LabelSet, StructureCode, chaos_label_set
from organseg.synth.abdomen import abdomen_label_set
from tests.conftest import AMOS8_LABELS


def _own_codes() -> LabelSet:
    """AMOS's first eight labels, one of them with a dataset's own code of another category."""
    labels = LabelSet.from_msd(AMOS8_LABELS, name="amos-8")
    lesion = StructureCode(
        Code("49755003", "SCT", "Morphologically Altered Structure"),
        Code("108369006", "SCT", "Neoplasm"),
    )
    return replace(labels, ignore=9).with_codes({"stomach": lesion})


def _over_grpc(described: dict) -> dict:
    """The description as ListModels carries it, read back as the gRPC client reads it."""
    from google.protobuf.json_format import MessageToDict

    from organseg.serve.router import _grpc_label_set

    return MessageToDict(_grpc_label_set(described), preserving_proto_field_name=True)


@pytest.mark.parametrize(
    "labels", [abdomen_label_set(), _own_codes()], ids=["abdomen", "own-codes"]
)
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_described_label_set_reads_back_exactly(labels: LabelSet, transport: str) -> None:
    described = describe_label_set(labels)
    if transport == "grpc":
        described = _over_grpc(described)
        assert "laterality" not in described["labels"][0]  # protobuf leaves unset fields out
    assert label_set_from_description(described) == labels


def test_the_chaos_organs_read_back_as_none() -> None:
    """A CHAOS model's answer is written as CHAOS organ ids, as it always was."""
    chaos = chaos_label_set()
    for labels in (chaos, LabelSet(chaos.labels[:1], name="chaos")):
        for described in (describe_label_set(labels), _over_grpc(describe_label_set(labels))):
            assert label_set_from_description(described) is None
    # the CHAOS names with other values or colours are not CHAOS organ ids
    moved = LabelSet((replace(chaos["liver"], value=6),), name="chaos")
    assert label_set_from_description(describe_label_set(moved)) is not None
