"""The modality classifier: trained on the slice cache's series features, validated by patient-grouped
cross-validation (out-of-fold predictions, a patient's series never in its own training fold),
measured on synthetic CT/T1-in/T1-out/T2 series of another seed and on the real CT case; the
validation gate and the confidence threshold decide when it may route."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from organseg.ensemble.modality_classifier import (
    HeldOut,
    ModalityClassifier,
    cross_validate,
    fit_from_cache,
    patient_folds,
)
from organseg.ensemble.routing import ModalityError, ModalityPolicy, decide_modality
from organseg.io import discover_cases, load_case
from organseg.io.volume import Modality, Volume

ALL = {"CT", "MR-T1-in", "MR-T1-out", "MR-T2SPIR"}


def _series(root: Path) -> list[Volume]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [load_case(r, with_label=False).image for r in discover_cases(root)]


def _headerless(volume: Volume, **meta: str) -> Volume:
    bare = volume.with_array(volume.array)
    bare.meta, bare.modality = dict(meta), Modality.UNKNOWN
    return bare


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> ModalityClassifier:
    """Trained as `organseg train` does: features stored in the slice cache, cross-validated over all
    its series grouped by patient, then fitted on all of them."""
    from organseg.preprocess.config import PreprocessConfig
    from organseg.preprocess.dataset import SliceCache
    from organseg.synth import write_dataset

    base = tmp_path_factory.mktemp("cls")
    write_dataset(base / "data", ct=4, mr=4, size=64, slices=12, seed=11)
    refs = [r for r in discover_cases(base / "data") if r.mask_dir is not None]
    cfg = PreprocessConfig(size=64, t1_mode="separate")
    cache = SliceCache.build(refs, base / "cache", cfg, ["liver"])
    assert all(len(s.modality_features) == 1 for s in cache.samples)  # stored in the records
    classifier = fit_from_cache(cache.samples)
    assert classifier is not None
    return classifier


def test_validated_out_of_fold_on_every_patient(trained: ModalityClassifier) -> None:
    held = trained.held_out
    assert held is not None
    print(trained.summary())
    assert set(held.per_class) == ALL
    # every series held out once: 4 CT patients, 4 MR patients with three series each
    assert all(n == 4 for _, n in held.per_class.values())
    assert (held.folds, held.patients) == (5, 8)
    assert held.accuracy == 1.0
    assert held.accuracy_per_class == dict.fromkeys(ALL, 1.0)
    assert trained.temperature >= 1.0
    assert trained.training_series == dict.fromkeys(ALL, 4)  # the final fit: all series
    assert trained.validation_problem(0.95, 4) is None  # passes the default gate
    summary = trained.summary()  # what `organseg train` prints
    assert "out-of-fold held-out accuracy 1.00 on 16 series" in summary
    assert "patient-grouped 5-fold cross-validation over 8 patients" in summary


def test_folds_hold_out_whole_patients() -> None:
    """Each patient's series are held out together, every series exactly once, and never in the
    training indices of the fold that predicts it; leave-one-patient-out below five patients."""
    patients = ["CT/1", "CT/2", "CT/3", "MR/1", "MR/1", "MR/1", "MR/2", "MR/2", "MR/3", "MR/4"]
    kinds = ["CT"] * 3 + ["MR"] * 7
    folds = patient_folds(patients, kinds)
    assert len(folds) == 5
    held = np.concatenate([f.held_out for f in folds])
    assert sorted(held.tolist()) == list(range(len(patients)))  # each series once
    for fold in folds:
        fitted = {patients[i] for i in fold.train}
        left_out = {patients[i] for i in fold.held_out}
        assert fitted.isdisjoint(left_out)
        assert fitted | left_out == set(patients)
    assert [len(f.held_out) for f in patient_folds(patients[:6], kinds[:6])] == [1, 1, 1, 3]


def test_out_of_fold_predictions_never_see_their_own_patient() -> None:
    """A modality that only one patient has cannot be predicted out of fold: the fold that holds that
    patient out has never seen the modality. A split that leaked the patient's own series into its
    training fold would get them right."""
    rng = np.random.default_rng(0)
    centres = {"CT": 0.0, "MR-T1-in": 5.0, "MR-T1-out": 10.0}
    rows, truth, patients = [], [], []
    for modality, patient_ids in (("CT", ["CT/1"] * 3),
                                  ("MR-T1-in", [f"MR/{i}" for i in range(4)]),
                                  ("MR-T1-out", [f"MR/{i}" for i in range(4, 8)])):  # fmt: skip
        for patient in patient_ids:
            rows.append(centres[modality] + rng.normal(0, 0.3, 5))
            truth.append(modality)
            patients.append(patient)
    held, temperature, folds = cross_validate(np.stack(rows), truth, patients)
    for fold in folds:  # the folds it fitted: disjoint by patient
        assert {patients[i] for i in fold.train}.isdisjoint({patients[i] for i in fold.held_out})
    assert held.per_class["CT"] == (0, 3)
    assert held.per_class["MR-T1-in"] == (4, 4)
    assert held.per_class["MR-T1-out"] == (4, 4)
    assert held.patients == 9
    assert temperature >= 1.0
    # the same data with each CT series its own patient: now the other CT series teach the fold
    distinct = [f"{p}/{i}" if p == "CT/1" else p for i, p in enumerate(patients)]
    assert cross_validate(np.stack(rows), truth, distinct)[0].per_class["CT"] == (3, 3)


def test_accuracy_on_synthetic_series_of_another_seed(
    trained: ModalityClassifier, synth_root: Path
) -> None:
    volumes = _series(synth_root)  # seed 7: other patients than training (seed 11)
    assert {v.modality.value for v in volumes} == ALL
    guesses = [trained.predict(v) for v in volumes]
    for volume, guess in zip(volumes, guesses, strict=True):
        print(f"{volume.modality.value:10} -> {guess.modality.value:10} {guess.confidence:.2f}")
    correct = [g.modality is v.modality for v, g in zip(volumes, guesses, strict=True)]
    assert np.mean(correct) == 1.0, correct


@pytest.mark.sample
def test_real_ct_case(trained: ModalityClassifier, chaos_ct_case: Path) -> None:
    (volume,) = _series(chaos_ct_case)
    guess = trained.predict(volume)
    print(f"real CT: {guess.modality.value} at {guess.confidence:.2f}")
    assert guess.modality is Modality.CT
    assert guess.confidence == max(guess.probabilities.values())


def test_headerless_volume_goes_to_the_classifier_when_validated(
    trained: ModalityClassifier, synth_root: Path
) -> None:
    ct = _headerless(next(v for v in _series(synth_root) if v.modality is Modality.CT))
    lenient = ModalityPolicy(min_confidence=0.5)
    decision = decide_modality(ct, classifier=trained, policy=lenient)
    assert decision.modality is Modality.CT
    assert decision.source == "classifier"
    assert decision.confidence is not None
    assert decision.confidence >= 0.5
    assert decision.reason.startswith("modality classifier")
    # below the confidence threshold: refused with the classifier's answer named
    strict = ModalityPolicy(min_confidence=0.999)
    with pytest.raises(ModalityError, match=r"says CT at 0\.\d\d confidence, below the 1\.00"):
        decide_modality(ct, classifier=trained, policy=strict)
    with pytest.raises(ModalityError, match="no modality classifier"):
        decide_modality(ct)  # no classifier: no guess
    # the request field still wins; the classifier is not asked
    assert decide_modality(ct, "MR-T2SPIR", trained, lenient).source == "request"


def test_the_gate(trained: ModalityClassifier, synth_root: Path) -> None:
    ct = _headerless(next(v for v in _series(synth_root) if v.modality is Modality.CT))
    # 4 out-of-fold series per modality: enough for the default gate (4), not for 5
    assert trained.validation_problem(0.95, 4) is None
    five = ModalityPolicy(min_confidence=0.5, min_held_out_series=5)
    with pytest.raises(
        ModalityError,
        match=r"validated on only 4 out-of-fold held-out CT series \(16 in all; 5 per",
    ) as caught:
        decide_modality(ct, classifier=trained, policy=five)
    assert "send the modality field" in str(caught.value)
    assert trained.validation_problem(1.01, 1) is not None  # accuracy below the threshold
    unvalidated = ModalityClassifier(**{**trained.__dict__, "held_out": None})
    assert "not validated" in (unvalidated.validation_problem(0.5, 1) or "")
    partial = ModalityClassifier(**{**trained.__dict__, "held_out": HeldOut({"CT": (2, 2)})})
    assert "validated on only 0 out-of-fold held-out" in (partial.validation_problem(0.5, 1) or "")
    no_ct = ModalityClassifier(**{**trained.__dict__, "classes": sorted(ALL - {"CT"})})
    assert "trained without CT" in (no_ct.validation_problem(0.5, 1) or "")


def test_mr_header_without_sequence_asks_the_classifier_and_must_agree(
    trained: ModalityClassifier, synth_root: Path
) -> None:
    volumes = _series(synth_root)
    lenient = ModalityPolicy(min_confidence=0.3)
    t2 = next(v for v in volumes if v.modality is Modality.MR_T2SPIR)
    decision = decide_modality(_headerless(t2, Modality="MR"), classifier=trained, policy=lenient)
    assert decision.modality is Modality.MR_T2SPIR
    assert decision.source == "classifier"
    assert "header allows it" in decision.reason
    # a CT image under an MR header: the header and the classifier disagree, and both are named
    ct = next(v for v in volumes if v.modality is Modality.CT)
    with pytest.raises(
        ModalityError, match=r"DICOM header .*allows .* but the modality classifier says CT"
    ):
        decide_modality(_headerless(ct, Modality="MR"), classifier=trained, policy=lenient)
    # a short echo without field strength allows T1 in/out only; a T2 image contradicts it
    with pytest.raises(ModalityError, match="says MR-T2SPIR"):
        decide_modality(
            _headerless(t2, Modality="MR", EchoTime="2.3"), classifier=trained, policy=lenient
        )


def test_images_unlike_any_training_series_are_refused(trained: ModalityClassifier) -> None:
    constant = Volume(np.full((4, 32, 32), 7, np.int16))
    assert trained.predict(constant).modality is Modality.UNKNOWN
    noise = Volume(np.random.default_rng(0).normal(-5000, 10, (4, 32, 32)).astype(np.float32))
    guess = trained.predict(noise)
    assert guess.modality is Modality.UNKNOWN
    assert "unlike any" in guess.evidence


def test_saved_in_the_model_directory(
    trained: ModalityClassifier, tmp_path: Path, synth_root: Path
) -> None:
    trained.save(tmp_path)
    again = ModalityClassifier.load(tmp_path)
    assert again is not None
    assert again.held_out == trained.held_out
    recorded = json.loads((tmp_path / "modality_classifier.json").read_text())["held_out"]
    assert (recorded["folds"], recorded["patients"], recorded["series"]) == (5, 8, 16)
    assert recorded["per_class"]["CT"] == [4, 4]
    assert recorded["accuracy_per_class"]["CT"] == 1.0
    assert again.temperature == trained.temperature
    volume = _series(synth_root)[0]
    assert again.predict(volume).probabilities == pytest.approx(
        trained.predict(volume).probabilities
    )
    assert ModalityClassifier.load(tmp_path / "none") is None
    (tmp_path / "modality_classifier.json").write_text('{"kind": "something else"}')
    from organseg.errors import ModelError

    with pytest.raises(ModelError, match="not a usable modality classifier"):
        ModalityClassifier.load(tmp_path)


def test_the_gate_per_modality(trained: ModalityClassifier) -> None:
    """An overall out-of-fold accuracy can hide one modality the classifier gets wrong: 76 of 80 passes
    the overall 0.95, yet 16 of 20 CT series is below the 0.9 each modality must reach."""
    tally = {c: (20, 20) for c in ALL} | {"CT": (16, 20)}
    skewed = ModalityClassifier(**{**trained.__dict__, "held_out": HeldOut(tally, 5, 40)})
    assert skewed.held_out is not None
    assert skewed.held_out.accuracy == 0.95
    assert skewed.validation_problem(0.95, 4) is None  # the overall gate alone lets it through
    problem = skewed.validation_problem(
        0.95, 4, ModalityPolicy().min_held_out_accuracy_per_modality
    )
    assert problem is not None
    assert (
        "accuracy on CT series is 0.80 (16 of 20; below the 0.90 required of each modality"
        in problem
    )
    assert skewed.validation_problem(0.95, 4, 0.8) is None
    ct = Volume(np.zeros((2, 8, 8)))
    with pytest.raises(ModalityError, match=r"on CT series is 0\.80"):
        decide_modality(ct, classifier=skewed)
