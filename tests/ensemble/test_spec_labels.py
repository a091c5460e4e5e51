"""The model directory's label set: recorded for any dataset, the CHAOS preset when absent."""

from __future__ import annotations

from organseg.config import PostprocessConfig
from organseg.ensemble.spec import EnsembleSpec, MemberEntry
from organseg.labels import LabelSet
from organseg.preprocess.config import PreprocessConfig


def _spec(**extra) -> EnsembleSpec:
    member = MemberEntry(
        name="m",
        arch="unet",
        in_channels=1,
        organs=["liver"],
        modalities=["CT"],
        weights="m/model.pt",
    )
    return EnsembleSpec(
        name="x",
        task=2,
        preprocess=PreprocessConfig(),
        postprocess=PostprocessConfig(),
        members=[member],
        **extra,
    )


def test_a_chaos_spec_without_labels_is_the_chaos_preset_restricted_to_its_organs() -> None:
    labels = _spec(organs=["liver", "spleen"]).label_set()
    assert labels.names == ("liver", "spleen")
    assert labels.values == (1, 4)


def test_a_recorded_label_set_round_trips_through_the_spec() -> None:
    recorded = LabelSet.from_nnunet({"background": 0, "pancreas": 1, "aorta": 2, "ignore": 3})
    spec = EnsembleSpec.model_validate(
        _spec(organs=list(recorded.names), labels=recorded.to_dict()).model_dump(mode="json")
    )
    assert spec.label_set() == recorded
    assert spec.label_set().ignore == 3
