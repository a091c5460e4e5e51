"""Patient-level train/validation splits and k-fold folds, stratified by CT/MR.

Samples of one patient (its CT, or its T1 in/out and T2 series) never land on both sides, so a
validation Dice never rewards memorising a patient.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from organseg.errors import ConfigError
from organseg.modalities import Modality


def _grouping(items: Sequence[Any]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(ids in input order, patient of each id, kind CT/MR of each patient)."""
    ids: list[str] = []
    patient_of: dict[str, str] = {}
    kind_of: dict[str, str] = {}
    for item in items:
        item_id = getattr(item, "id", None) or getattr(item, "case_id", None)
        patient = getattr(item, "patient", None)
        if item_id is None or patient is None:
            raise TypeError(f"expected SampleRecord or CaseRef items, got {type(item).__name__}")
        modality = Modality.parse(getattr(item, "modality", Modality.UNKNOWN))
        ids.append(item_id)
        patient_of[item_id] = patient
        kind_of.setdefault(patient, "MR" if modality.is_mr else modality.value)
    return ids, patient_of, kind_of


def _natural(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _shuffled_by_kind(kind_of: dict[str, str], rng: np.random.Generator) -> dict[str, list[str]]:
    by_kind: dict[str, list[str]] = {}
    for patient in sorted(kind_of, key=_natural):
        by_kind.setdefault(kind_of[patient], []).append(patient)
    return {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_kind.items())}


def patient_split(
    samples_or_refs: Sequence[Any], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split ids (sample ids or case ids) into train and validation by patient, stratified by CT/MR.

    No patient is on both sides. With two or more patients and ``val_fraction > 0`` at least one goes to
    validation and at least one stays in training; per kind, validation patients are allotted in
    proportion to its share (largest remainders, ties broken by ``seed``).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids, patient_of, kind_of = _grouping(samples_or_refs)
    rng = np.random.default_rng(seed)
    by_kind = _shuffled_by_kind(kind_of, rng)
    n = len(kind_of)
    n_val = (
        0
        if val_fraction == 0.0 or n < 2
        else min(n - 1, max(1, math.floor(val_fraction * n + 0.5)))
    )
    kinds = list(by_kind)
    exact = {k: n_val * len(by_kind[k]) / n for k in kinds}
    quota = {k: math.floor(exact[k]) for k in kinds}
    tie_break = {k: r for r, k in zip(rng.permutation(len(kinds)), kinds, strict=True)}
    by_remainder = sorted(kinds, key=lambda k: (-(exact[k] - quota[k]), tie_break[k]))
    for k in by_remainder[: n_val - sum(quota.values())]:
        quota[k] += 1
    val_patients = {p for k in kinds for p in by_kind[k][: quota[k]]}
    train = [i for i in ids if patient_of[i] not in val_patients]
    val = [i for i in ids if patient_of[i] in val_patients]
    return train, val


def grouped_folds(
    groups: Sequence[str], kinds: Sequence[str], k: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (fitted indices, held-out indices) folds over items grouped by patient: every group is
    held out in exactly one fold, and never on both sides of one.

    Groups are dealt to folds round-robin, kind after kind (each kind's groups shuffled by ``seed``),
    so each fold gets a similar mix of kinds; a group's kind is that of its first item. The project's
    one grouped k-fold, for the ensemble's k-fold members and the modality classifier's validation.
    Our own rather than scikit-learn's StratifiedGroupKFold, which deals groups differently: it would
    re-deal the patients of every k-fold member `organseg train` has trained.
    """
    kind_of: dict[str, str] = {}
    for group, kind in zip(groups, kinds, strict=True):
        kind_of.setdefault(group, kind)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    position = 0
    for members in _shuffled_by_kind(kind_of, rng).values():
        for group in members:
            fold_of[group] = position % k
            position += 1
    of_item = np.array([fold_of[g] for g in groups])
    index = np.arange(len(of_item))
    return [(index[of_item != fold], index[of_item == fold]) for fold in range(k)]


def kfold_splits(
    samples: Sequence[Any], k: int, seed: int = 0
) -> list[tuple[list[str], list[str]]]:
    """``k`` (train ids, validation ids) folds; every patient is in exactly one validation fold.

    Patients are dealt to folds round-robin, CT then MR, so each fold gets a similar mix of kinds
    (:func:`grouped_folds`).
    """
    ids, patient_of, kind_of = _grouping(samples)
    if not 2 <= k <= len(kind_of):
        raise ConfigError(f"k-fold needs 2 <= k <= number of patients ({len(kind_of)}), got k={k}")
    patients = [patient_of[i] for i in ids]
    folds = grouped_folds(patients, [kind_of[p] for p in patients], k, seed)
    return [([ids[i] for i in fitted], [ids[i] for i in held]) for fitted, held in folds]
