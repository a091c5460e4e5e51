"""Model directories and the in-process ensemble on untrained members (no Ray)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from organseg.config import parse_config
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.ensemble.spec import SPEC_FILE, load_spec, write_untrained_model_dir
from organseg.errors import ModelError
from organseg.io.volume import Geometry, Modality, Volume


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = parse_config(
        {
            "name": "spec-test",
            "task": 1,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 64, "t1_mode": "separate"},
            "members": [
                {
                    "name": "a",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 4, "depth": 3},
                    "modalities": ["CT", "MR-T2SPIR"],
                },
                {
                    "name": "b",
                    "arch": "dualtail",
                    "kwargs": {"base_channels": 4, "depth": 3},
                    "modalities": ["CT"],
                },
            ],
        }
    )
    return write_untrained_model_dir(config, tmp_path_factory.mktemp("model"))


def test_spec_lists_ensembles_per_modality(model_dir: Path) -> None:
    spec = load_spec(model_dir)
    assert [m.value for m in spec.modalities()] == ["CT", "MR-T2SPIR"]
    assert [m.name for m in spec.members_for("CT")] == ["a", "b"]
    assert [m.name for m in spec.members_for(Modality.MR_T2SPIR)] == ["a"]
    with pytest.raises(ModelError, match="serves"):
        spec.members_for("MR-T1-in")


def test_missing_or_broken_model_dir(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a model directory"):
        load_spec(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / SPEC_FILE).write_text((model_dir / SPEC_FILE).read_text())
    with pytest.raises(ModelError, match="weights of member"):
        load_spec(broken)
    (broken / SPEC_FILE).write_text(yaml.safe_dump({"name": "x"}))
    with pytest.raises(ModelError, match="invalid ensemble description"):
        load_spec(broken)


def test_prediction_is_on_the_input_grid(model_dir: Path) -> None:
    geometry = Geometry(
        spacing=(0.8, 0.8, 2.5), origin=(1, 2, 3), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    image = Volume(np.random.default_rng(0).integers(-200, 300, (6, 100, 90)).astype(np.int16), geometry,
                   Modality.CT, {"Modality": "CT"})  # fmt: skip
    prediction = EnsemblePredictor(model_dir, device="cpu").predict(image)
    assert prediction.labels.shape == image.shape
    assert prediction.labels.geometry == geometry
    assert prediction.labels.array.dtype == np.uint8
    assert set(np.unique(prediction.labels.array)) <= {0, 1}
    assert prediction.members == ["a", "b"]
    assert set(prediction.uncertainty) == {"liver"}
    report = prediction.report()
    assert report["modality"] == "CT"
    assert report["modality_reason"] == "DICOM Modality=CT"
    assert report["volumes_ml"]["liver"] == pytest.approx(
        prediction.labels.array.sum() * 0.8 * 0.8 * 2.5 / 1000
    )


def test_modality_without_ensemble_is_refused(model_dir: Path) -> None:
    image = Volume(np.zeros((2, 64, 64), np.int16), modality=Modality.MR_T1_OUT)
    with pytest.raises(ModelError, match="MR-T1-out"):
        EnsemblePredictor(model_dir, device="cpu").predict(image)


def test_a_decision_made_upstream_is_kept_with_its_evidence(model_dir: Path) -> None:
    """The served router decides a series' modality once (``assemble``) and hands the decision to
    the ensemble: it is not decided again, so its reason, source and confidence reach the answer
    as made, and the labels are those of a prediction that decides for itself."""
    from organseg.io.modality import ModalityDecision

    image = Volume(np.random.default_rng(1).integers(-200, 300, (5, 64, 64)).astype(np.int16),
                   Geometry(spacing=(0.8, 0.8, 2.5)), Modality.CT, {"Modality": "CT"})  # fmt: skip
    predictor = EnsemblePredictor(model_dir, device="cpu")
    itself = predictor.predict(image)
    upstream = ModalityDecision(
        Modality.CT, "decided upstream", source="classifier", confidence=0.97
    )
    kept = predictor.predict(image, decision=upstream)
    assert (kept.modality_reason, kept.modality_source, kept.modality_confidence) == (
        "decided upstream",
        "classifier",
        0.97,
    )
    assert np.array_equal(kept.labels.array, itself.labels.array)
