"""CHAOS per-organ metrics and scores, with the organizers' exact semantics.

For a reference mask R and a predicted mask P on one voxel grid (counts |·| in voxels):

- DICE = 2|R∩P| / (|R| + |P|)
- RAVD = | |P| − |R| | / |R| · 100 (percent; absolute, as the organizers' ``RAVD`` takes ``abs``)
- ASSD = mean of all border-to-border distances, both directions pooled (mm)
- MSSD = largest border-to-border distance in either direction (mm)

and each turns into a 0–100 score (the challenge's metrics document): DICE below 0.8 scores 0,
else 100·DICE; RAVD above 5 % scores 0, else 100 − 20·RAVD; ASSD above 15 mm scores 0, else
100 − (20/3)·ASSD; MSSD above 60 mm scores 0, else 100 − (5/3)·MSSD. The organ's score is their
mean.

The seed papers' Table-1 figures come along: sensitivity |R∩P|/|R|, specificity (true negatives over
reference background), Jaccard |R∩P|/|R∪P| and the absolute volume error in millilitres.

Edge cases the organizers' evaluator leaves undefined (it divides by zero or builds a KD-tree over
no points) are defined here:

- both masks empty: a perfect match — DICE 1, Jaccard 1, RAVD 0, ASSD 0, MSSD 0, every score 100;
- empty reference, non-empty prediction: DICE 0, Jaccard 0, RAVD, ASSD and MSSD infinite, scores 0;
- empty prediction, non-empty reference: DICE 0, Jaccard 0, RAVD 100 % (the formula is defined),
  ASSD and MSSD infinite, scores 0;
- sensitivity is NaN ("not defined") whenever the reference is empty, specificity whenever the
  reference covers the whole volume; NaN and infinities are written as ``null`` in JSON and CSV.

A non-empty mask filling the whole array has no border voxels (the array edge is not a surface under
``border_value=1``); its distances follow the same rule: 0 against another such mask, else infinite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from organseg.errors import DataError
from organseg.io.volume import Geometry
from organseg.metrics.surface import surface_distances, voxel_volume_ml
from organseg.organs import ORGAN_LABELS, ORGAN_NAMES, organ_ids

#: Column order of :meth:`OrganMetrics.to_dict`, CSV files and tables.
METRIC_FIELDS: tuple[str, ...] = (
    "dice", "ravd", "assd", "mssd", "score",
    "dice_score", "ravd_score", "assd_score", "mssd_score",
    "sensitivity", "specificity", "jaccard", "volume_error_ml",
    "ref_volume_ml", "pred_volume_ml", "ref_voxels", "pred_voxels", "empty",
)  # fmt: skip


def dice_score(dice: float) -> float:
    """CHAOS score of a DICE value: 0 below 0.8, else 100·DICE."""
    return 0.0 if not dice >= 0.8 else 100.0 * dice


def ravd_score(ravd: float) -> float:
    """CHAOS score of a RAVD (percent): 0 above 5 %, else 100 − 20·RAVD."""
    return 0.0 if not ravd <= 5.0 else 100.0 - 20.0 * ravd


def assd_score(assd: float) -> float:
    """CHAOS score of an ASSD (mm): 0 above 15 mm, else 100 − (20/3)·ASSD."""
    return 0.0 if not assd <= 15.0 else 100.0 - (20.0 / 3.0) * assd


def mssd_score(mssd: float) -> float:
    """CHAOS score of an MSSD (mm): 0 above 60 mm, else 100 − (5/3)·MSSD."""
    return 0.0 if not mssd <= 60.0 else 100.0 - (5.0 / 3.0) * mssd


def chaos_score(dice: float, ravd: float, assd: float, mssd: float) -> float:
    """The organ score: the mean of the four metric scores."""
    return (dice_score(dice) + ravd_score(ravd) + assd_score(assd) + mssd_score(mssd)) / 4.0


def _json_number(value: float | int | str | None) -> float | int | str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class OrganMetrics:
    """Every figure for one organ; RAVD in percent, distances in mm, volumes in mL."""

    dice: float
    ravd: float
    assd: float
    mssd: float
    score: float
    dice_score: float
    ravd_score: float
    assd_score: float
    mssd_score: float
    sensitivity: float
    specificity: float
    jaccard: float
    volume_error_ml: float
    ref_volume_ml: float
    pred_volume_ml: float
    ref_voxels: int
    pred_voxels: int
    #: Which mask was empty: ``"reference"``, ``"prediction"``, ``"both"`` or None.
    empty: str | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        """JSON-safe mapping in :data:`METRIC_FIELDS` order (NaN/inf become None)."""
        values = asdict(self)
        return {name: _json_number(values[name]) for name in METRIC_FIELDS}


def evaluate_organ(
    ref: np.ndarray, pred: np.ndarray, geometry: Geometry | None = None
) -> OrganMetrics:
    """All CHAOS and Table-1 figures for one organ's reference and predicted masks ``[z, y, x]``."""
    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape:
        raise DataError(f"reference shape {ref.shape} and prediction shape {pred.shape} differ")
    geometry = geometry or Geometry()
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    overlap = int(np.count_nonzero(ref & pred))
    union = n_ref + n_pred - overlap
    ref_background = ref.size - n_ref
    true_negatives = ref.size - union

    dice = 2.0 * overlap / (n_ref + n_pred) if n_ref + n_pred else 1.0
    jaccard = overlap / union if union else 1.0
    ravd = abs(n_pred - n_ref) / n_ref * 100.0 if n_ref else (math.inf if n_pred else 0.0)
    distances = surface_distances(ref, pred, geometry)
    if distances is not None:
        assd, mssd = distances.assd, distances.mssd
    elif np.array_equal(ref, pred):  # both empty (or both filling the array): nothing to measure
        assd = mssd = 0.0
    else:
        assd = mssd = math.inf

    voxel_ml = voxel_volume_ml(geometry)
    empty = {(True, True): "both", (True, False): "reference", (False, True): "prediction"}.get(
        (n_ref == 0, n_pred == 0)
    )
    return OrganMetrics(
        dice=dice,
        ravd=ravd,
        assd=assd,
        mssd=mssd,
        score=chaos_score(dice, ravd, assd, mssd),
        dice_score=dice_score(dice),
        ravd_score=ravd_score(ravd),
        assd_score=assd_score(assd),
        mssd_score=mssd_score(mssd),
        sensitivity=overlap / n_ref if n_ref else math.nan,
        specificity=true_negatives / ref_background if ref_background else math.nan,
        jaccard=jaccard,
        volume_error_ml=abs(n_pred - n_ref) * voxel_ml,
        ref_volume_ml=n_ref * voxel_ml,
        pred_volume_ml=n_pred * voxel_ml,
        ref_voxels=n_ref,
        pred_voxels=n_pred,
        empty=empty,
    )


def evaluate_masks(
    ref_labels: np.ndarray,
    pred_labels: np.ndarray,
    geometry: Geometry | None = None,
    organs: Iterable[str] | None = None,
) -> dict[str, OrganMetrics]:
    """Per-organ metrics for two label maps (organseg label ids, ``[z, y, x]``) on one grid.

    ``organs`` defaults to every organ whose label occurs in either map (liver when neither has
    any).
    """
    ref_labels = np.asarray(ref_labels)
    pred_labels = np.asarray(pred_labels)
    if ref_labels.shape != pred_labels.shape:
        raise DataError(
            f"reference shape {ref_labels.shape} and prediction shape {pred_labels.shape} differ"
        )
    if organs is None:
        names = [
            name
            for name in ORGAN_NAMES
            if (ref_labels == ORGAN_LABELS[name]).any() or (pred_labels == ORGAN_LABELS[name]).any()
        ] or ["liver"]
    else:
        names = list(dict.fromkeys(organs))
    ids = organ_ids(names)
    return {
        name: evaluate_organ(ref_labels == label, pred_labels == label, geometry)
        for name, label in zip(names, ids, strict=True)
    }
