"""A model with a generic MR ensemble (trained on MR channels of no named sequence): an MR series
reaches it when no sequence-specific ensemble of the model can claim the series, and is refused,
naming the sequence, when one could and the headers do not establish it. Models without a generic
MR ensemble route exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.ensemble.assembly import SeriesInput, StackRule, assemble, served_modalities
from organseg.ensemble.routing import ModalityError, decide_modality
from organseg.io.volume import Modality, Volume

CT_AND_MR = frozenset({Modality.CT, Modality.MR})
MR_AND_T2 = frozenset({Modality.MR, Modality.MR_T2SPIR})
#: DICOM header values (no patient data): an MR series whose sequence the tags do not name...
MR_UNNAMED = {"Modality": "MR", "SeriesInstanceUID": "1.2.3", "SeriesNumber": "7"}
#: ...and one whose SeriesDescription names T2-SPIR.
MR_T2 = MR_UNNAMED | {"SeriesDescription": "T2 SPIR tra"}
MR_T1_IN = MR_UNNAMED | {"SeriesDescription": "T1 in phase"}


def _volume(meta: dict | None = None, modality: Modality = Modality.UNKNOWN) -> Volume:
    return Volume(np.zeros((2, 4, 4), np.int16), modality=modality, meta=dict(meta or {}))


@pytest.mark.parametrize("meta", [MR_UNNAMED, MR_T2, MR_T1_IN])
def test_an_mr_series_reaches_the_generic_mr_ensemble(meta: dict) -> None:
    decision = decide_modality(_volume(meta), served=CT_AND_MR)
    assert decision.modality is Modality.MR
    assert decision.source == "header"
    assert "generic MR ensemble" in decision.reason


def test_ct_still_goes_to_ct() -> None:
    decision = decide_modality(_volume({"Modality": "CT"}), served=CT_AND_MR)
    assert (decision.modality, decision.reason) == (Modality.CT, "DICOM Modality=CT")


def test_a_sequence_specific_ensemble_claims_its_sequence() -> None:
    assert decide_modality(_volume(MR_T2), served=MR_AND_T2).modality is Modality.MR_T2SPIR
    # T1 in-phase: no T1 ensemble here, so the generic one
    assert decide_modality(_volume(MR_T1_IN), served=MR_AND_T2).modality is Modality.MR


def test_an_unestablished_sequence_is_refused_when_it_decides() -> None:
    with pytest.raises(ModalityError) as caught:
        decide_modality(_volume(MR_UNNAMED), served=MR_AND_T2)
    message = str(caught.value)
    assert "cannot tell the MR sequence" in message
    assert "sequence-specific ensembles (MR-T2SPIR)" in message
    assert message.endswith("send the modality field as CT, MR-T1-in, MR-T1-out, MR-T2SPIR or MR")
    assert "pass --modality" in caught.value.cli_message()


def test_an_unestablished_sequence_the_header_rules_out_of_every_claimant_goes_generic() -> None:
    """An echo time the T2 rule excludes: only T1 phases remain, and no T1 ensemble is here."""
    meta = MR_UNNAMED | {"EchoTime": "2.3", "RepetitionTime": "150"}
    decision = decide_modality(_volume(meta), served=MR_AND_T2)
    assert decision.modality is Modality.MR


def test_requests_name_mr_and_must_not_contradict_the_header() -> None:
    assert decide_modality(_volume(), "MR", served=CT_AND_MR).source == "request"
    assert decide_modality(_volume(MR_UNNAMED), "MR", served=MR_AND_T2).modality is Modality.MR
    with pytest.raises(ModalityError, match="requested modality MR contradicts the DICOM header"):
        decide_modality(_volume({"Modality": "CT"}), "MR", served=CT_AND_MR)
    routed = decide_modality(_volume(), "MR-T2SPIR", served=CT_AND_MR)  # no T2 ensemble here
    assert routed.modality is Modality.MR
    assert routed.source == "request"


def test_a_headerless_volume_must_say_its_modality() -> None:
    with pytest.raises(ModalityError) as caught:
        decide_modality(_volume(), served=CT_AND_MR)
    assert "the model has no modality classifier" in str(caught.value)
    assert "send the modality field as CT, MR-T1-in, MR-T1-out, MR-T2SPIR or MR" in str(
        caught.value
    )


def test_models_without_a_generic_mr_ensemble_route_as_before() -> None:
    served = frozenset({Modality.CT, Modality.MR_T2SPIR})
    for kwargs in ({}, {"served": served}):
        with pytest.raises(ModalityError) as caught:
            decide_modality(_volume(MR_UNNAMED), **kwargs)
        assert str(caught.value).endswith(
            "send the modality field as CT, MR-T1-in, MR-T1-out or MR-T2SPIR"
        )
        assert decide_modality(_volume(MR_T2), **kwargs).modality is Modality.MR_T2SPIR


def test_assembly_routes_a_series_to_the_generic_ensemble_and_refuses_an_ambiguous_one() -> None:
    """The router's own path: :func:`assemble` with the model's stacking rule."""
    generic = StackRule("amos", None, False, CT_AND_MR)
    assembled = assemble([SeriesInput(_volume(MR_T2), "series 7")], generic)
    assert assembled.modality is Modality.MR
    assert "generic MR ensemble" in assembled.decision.reason
    both = StackRule("amos", None, False, MR_AND_T2)
    with pytest.raises(ModalityError, match="cannot tell the MR sequence"):
        assemble([SeriesInput(_volume(MR_UNNAMED), "series 7")], both)


def test_a_model_of_ct_and_generic_mr_members_segments_an_mr_series(tmp_path: Path) -> None:
    """In-process through a real model directory: an MR DICOM series reaches the MR member."""
    from organseg.config import parse_config
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.ensemble.spec import load_spec, write_untrained_model_dir
    from organseg.labels import LabelSet

    member = {"arch": "attention_unet", "kwargs": {"base_channels": 8, "depth": 2}}
    config = parse_config(
        {
            "name": "mixed",
            "dataset": {"path": str(tmp_path / "absent"), "format": "nnunet"},
            "preprocess": {"size": 32},
            "members": [
                {"name": "ct", "modalities": ["CT"]} | member,
                {"name": "mr", "modalities": ["MR"]} | member,
            ],
        }
    )
    labels = LabelSet.from_msd({"0": "background", "1": "liver", "2": "spleen"}, name="mixed")
    model_dir = write_untrained_model_dir(config, tmp_path / "model", labels=labels)
    assert served_modalities(load_spec(model_dir)) == CT_AND_MR
    series = Volume(np.zeros((4, 32, 32), np.int16), meta=dict(MR_T2))
    prediction = EnsemblePredictor(model_dir, device="cpu").predict(series)
    assert prediction.modality is Modality.MR
    assert "generic MR ensemble" in prediction.modality_reason
    assert [m.name for m in load_spec(model_dir).members_for(prediction.modality)] == ["mr"]


def test_the_modality_classifier_keeps_its_four_classes() -> None:
    """Generic MR series never become a class: CT + MR data fit no classifier at all."""
    from types import SimpleNamespace

    from organseg.ensemble.modality_classifier import fit_from_cache

    rng = np.random.default_rng(0)
    records = [
        SimpleNamespace(patient=f"p{i}", modality_features={kind: rng.normal(size=6).tolist()})
        for i, kind in enumerate(["CT", "CT", "MR", "MR"])
    ]
    assert fit_from_cache(records) is None
    records.append(SimpleNamespace(patient="p9", modality_features={"MR-T2SPIR": [0.0] * 6}))
    classifier = fit_from_cache(records)
    assert classifier is not None
    assert sorted(classifier.classes) == ["CT", "MR-T2SPIR"]
