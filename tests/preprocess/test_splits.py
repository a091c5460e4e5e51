"""Patient-level train/validation and k-fold splits."""

from pathlib import Path

import pytest

from organseg.errors import ConfigError
from organseg.io import CaseRef, Modality, discover_cases
from organseg.preprocess import kfold_splits, patient_split


def _refs(kind: str, n: int) -> list[CaseRef]:
    out = []
    for i in range(1, n + 1):
        if kind == "CT":
            out.append(CaseRef(f"CT/{i}", f"CT/{i}", Modality.CT, Path("x"), None))
        else:
            for mod, name in ((Modality.MR_T1_IN, "T1DUAL-in"), (Modality.MR_T2SPIR, "T2SPIR")):
                out.append(CaseRef(f"MR/{i}/{name}", f"MR/{i}", mod, Path("x"), None))
    return out


def test_patient_split_never_leaks_and_stratifies() -> None:
    refs = _refs("CT", 10) + _refs("MR", 10)
    patient = {r.case_id: r.patient for r in refs}
    for seed in range(5):
        train, val = patient_split(refs, val_fraction=0.1, seed=seed)
        assert sorted(train + val) == sorted(patient)
        assert not {patient[i] for i in train} & {patient[i] for i in val}
        val_patients = {patient[i] for i in val}
        assert len(val_patients) == 2
        assert {p.split("/")[0] for p in val_patients} == {"CT", "MR"}
    assert patient_split(refs, seed=1) != patient_split(refs, seed=2)
    assert patient_split(refs, seed=1) == patient_split(refs, seed=1)


def test_patient_split_small_sets(synth_root: Path) -> None:
    refs = discover_cases(synth_root)  # 4 patients: 10% rounds to 0, still one in validation
    patient = {r.case_id: r.patient for r in refs}
    train, val = patient_split(refs)
    assert len({patient[i] for i in val}) == 1
    assert train
    assert patient_split(refs[:1]) == (["CT/1"], [])
    assert patient_split(refs, val_fraction=0.0) == ([r.case_id for r in refs], [])
    with pytest.raises(ConfigError, match="val_fraction"):
        patient_split(refs, val_fraction=1.0)
    with pytest.raises(TypeError, match="SampleRecord or CaseRef"):
        patient_split(["CT/1"])


def test_kfold_covers_every_patient_once() -> None:
    refs = _refs("CT", 7) + _refs("MR", 5)
    patient = {r.case_id: r.patient for r in refs}
    folds = kfold_splits(refs, k=5, seed=0)
    assert len(folds) == 5
    seen: list[str] = []
    for train, val in folds:
        assert sorted(train + val) == sorted(patient)
        assert not {patient[i] for i in train} & {patient[i] for i in val}
        seen += sorted({patient[i] for i in val})
    assert sorted(seen) == sorted(set(patient.values()))
    assert max(len(v) for _, v in folds) - min(len(v) for _, v in folds) <= 2
    with pytest.raises(ConfigError, match="k=13"):
        kfold_splits(refs, k=13)
