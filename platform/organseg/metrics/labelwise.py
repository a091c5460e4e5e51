"""Per-label metrics for any label set: Dice, HD95, ASSD, RAVD and normalized surface Dice (NSD).

These are the figures FLARE and the Medical Segmentation Decathlon report. The CHAOS scores
(:mod:`organseg.metrics.chaos`) stay what CHAOS tasks are scored with; this module serves every
other label set.

The metrics themselves are MONAI's (``compute_dice``, and the surface distances behind
``compute_hausdorff_distance`` at the 95th percentile, symmetric ``compute_average_surface_distance``
and ``compute_surface_dice``), computed once per label on that label's binary masks with the grid's
millimetre spacing. What is added here is what a
label map needs around them:

- a label is the voxels holding its value (or, for region-based labels, any of its region's values);
- voxels the reference marks with the label set's ``ignore`` value are left out of every metric (the
  prediction there is cleared before comparing, nnU-Net's rule for partially annotated cases);
- empty masks get explicit answers instead of MONAI's NaN/inf and warnings: both empty → Dice and
  NSD 1 (FLARE's convention), distances and RAVD undefined (None); one empty → Dice and NSD 0,
  distances undefined, ``empty`` says which.

Distances need orthogonal voxel axes (MONAI measures with per-axis spacing); a sheared grid is
refused rather than measured wrongly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from organseg.errors import DataError
from organseg.io.volume import Geometry
from organseg.labels import Label, LabelSet
from organseg.metrics.surface import orthogonal_spacing_zyx, voxel_volume_ml

#: NSD tolerance (mm) for labels without their own: FLARE22's 1 mm.
DEFAULT_NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class LabelMetrics:
    """One label's figures. Distances in mm, RAVD in percent (|V_pred − V_ref| / V_ref, as CHAOS)."""

    dice: float
    hd95: float | None
    assd: float | None
    ravd: float | None
    nsd: float
    tolerance_mm: float
    ref_voxels: int
    pred_voxels: int
    ref_volume_ml: float
    pred_volume_ml: float
    empty: str | None = None  # "both", "reference", "prediction" or None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def label_mask(array: np.ndarray, label: Label) -> np.ndarray:
    """The voxels of ``label`` in a label map (a region-based label covers each of its values)."""
    values = label.region if label.region is not None else (label.value,)
    if len(values) == 1:
        return np.asarray(array) == values[0]
    return np.isin(array, values)


def tolerances_for(
    label_set: LabelSet, tolerances: Mapping[str, float] | float | None = None
) -> dict[str, float]:
    """NSD tolerance per label name: one number for all, a mapping by name (others get the default)."""
    if tolerances is None or isinstance(tolerances, (int, float)):
        value = DEFAULT_NSD_TOLERANCE_MM if tolerances is None else float(tolerances)
        return dict.fromkeys(label_set.names, value)
    unknown = sorted(set(tolerances) - set(label_set.names))
    if unknown:
        raise DataError(
            f"NSD tolerance given for unknown label(s) {unknown}; labels are {list(label_set.names)}"
        )
    out = {}
    for name in label_set.names:
        value = float(tolerances.get(name, DEFAULT_NSD_TOLERANCE_MM))
        if not value >= 0 or math.isinf(value):
            raise DataError(f"NSD tolerance of {name!r} must be a finite number >= 0, got {value}")
        out[name] = value
    return out


def _box(mask: np.ndarray) -> tuple[slice, ...]:
    """The box holding every voxel of a non-empty ``mask``, grown by one voxel within the array."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return tuple(box)


def _monai_surface(
    pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, float, float], tolerance: float
) -> tuple[float, float, float]:
    """HD95, ASSD and NSD of two non-empty binary masks, by MONAI.

    MONAI's ``compute_hausdorff_distance``, ``compute_average_surface_distance`` and
    ``compute_surface_dice`` each call ``get_edge_surface_distance`` (edges plus two distance
    transforms) and then aggregate the two directed distance arrays. Calling that shared function once
    and applying their three aggregations (quoted below) gives the same numbers in a third of the time;
    a test compares them with the three public functions.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    y_pred = torch.from_numpy(pred).float()
    y = torch.from_numpy(ref).float()
    _, (pred_to_ref, ref_to_pred), _ = get_edge_surface_distance(
        y_pred, y, spacing=list(spacing_zyx), symmetric=True
    )
    # compute_hausdorff_distance(percentile=95): the larger directed 95th percentile
    hd95 = torch.max(torch.quantile(pred_to_ref, 0.95), torch.quantile(ref_to_pred, 0.95))
    # compute_average_surface_distance(symmetric=True): the mean of both directions pooled
    assd = torch.cat((pred_to_ref, ref_to_pred)).mean()
    # compute_surface_dice (use_subvoxels=False): edge voxels within tolerance, both directions
    within = torch.sum(pred_to_ref <= tolerance) + torch.sum(ref_to_pred <= tolerance)
    nsd = within / (len(pred_to_ref) + len(ref_to_pred))
    return float(hd95), float(assd), float(nsd)


def evaluate_label(
    ref: np.ndarray,
    pred: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    voxel_ml: float | None = None,
) -> LabelMetrics:
    """Every metric of one label's binary masks (``[z, y, x]``, ``spacing_zyx`` in mm)."""
    import torch
    from monai.metrics import compute_dice

    ref = np.asarray(ref, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ref.shape != pred.shape or ref.ndim != 3:
        raise ValueError(f"need two 3D masks of one shape, got {ref.shape} and {pred.shape}")
    if voxel_ml is None:
        voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    volumes = {
        "tolerance_mm": float(tolerance_mm),
        "ref_voxels": n_ref,
        "pred_voxels": n_pred,
        "ref_volume_ml": n_ref * voxel_ml,
        "pred_volume_ml": n_pred * voxel_ml,
    }
    if n_ref == 0 and n_pred == 0:
        return LabelMetrics(1.0, None, None, None, 1.0, empty="both", **volumes)  # type: ignore[arg-type]
    if n_ref == 0:
        return LabelMetrics(0.0, None, None, None, 0.0, empty="reference", **volumes)  # type: ignore[arg-type]
    ravd = abs(n_pred - n_ref) / n_ref * 100.0
    if n_pred == 0:
        return LabelMetrics(0.0, None, None, ravd, 0.0, empty="prediction", **volumes)  # type: ignore[arg-type]
    # Crop to the box holding both masks plus one voxel, so MONAI works on the organ, not the whole
    # scan: overlap and border distances are unchanged, the edge of the box being background.
    box = _box(pred | ref)
    pred, ref = np.ascontiguousarray(pred[box]), np.ascontiguousarray(ref[box])
    with warnings.catch_warnings():  # MONAI warns on every call about things handled above
        warnings.simplefilter("ignore")
        dice = float(
            compute_dice(
                torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None]
            ).item()
        )
        hd95, assd, nsd = _monai_surface(pred, ref, spacing_zyx, tolerance_mm)
    return LabelMetrics(dice, hd95, assd, ravd, nsd, **volumes)  # type: ignore[arg-type]


def evaluate_label_maps(
    ref: np.ndarray,
    pred: np.ndarray,
    geometry: Geometry,
    label_set: LabelSet,
    tolerances: Mapping[str, float] | float | None = None,
    only: Collection[str] | None = None,
) -> dict[str, LabelMetrics]:
    """Every label of ``label_set`` (or those named in ``only``) scored on two label maps on one
    grid, in the set's order.

    Reference voxels holding ``label_set.ignore`` count for no label, in either map.
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise DataError(f"reference {ref.shape} and prediction {pred.shape} differ in shape")
    spacing = orthogonal_spacing_zyx(geometry)
    if spacing is None:
        raise DataError(
            "the grid's voxel axes are not orthogonal (sheared or gantry-tilted); surface "
            "distances need orthogonal axes, resample the masks first"
        )
    known = label_set.allowed_values()
    for what, array in (("reference", ref), ("prediction", pred)):
        stray = sorted(int(v) for v in np.unique(array) if int(v) not in known)
        if stray:
            raise DataError(
                f"the {what} holds values {stray} that are no label of {label_set.name or 'the set'} "
                f"(valid: {sorted(known)})"
            )
    keep = None if label_set.ignore is None else ref != label_set.ignore
    tolerance = tolerances_for(label_set, tolerances)
    voxel_ml = voxel_volume_ml(geometry)
    results = {}
    for label in label_set:
        if only is not None and label.name not in only:
            continue
        pred_mask = label_mask(pred, label)
        if keep is not None:
            pred_mask &= keep
        results[label.name] = evaluate_label(
            label_mask(ref, label), pred_mask, spacing, tolerance[label.name], voxel_ml
        )
    return results


def label_volumes_ml(
    labels: np.ndarray, geometry: Geometry, label_set: LabelSet
) -> dict[str, float]:
    """Volume (mL) of every label of ``label_set`` in a label map, by label name, in the set's order."""
    voxel_ml = voxel_volume_ml(geometry)
    labels = np.asarray(labels)
    return {lb.name: float(label_mask(labels, lb).sum()) * voxel_ml for lb in label_set}


def mean_by_label(
    cases: Mapping[str, Mapping[str, LabelMetrics]],
) -> dict[str, dict[str, float | int | None]]:
    """Mean of each metric per label over cases (undefined values left out; ``n`` counts cases)."""
    out: dict[str, dict[str, float | int | None]] = {}
    names: list[str] = []
    for per_label in cases.values():
        names += [n for n in per_label if n not in names]
    for name in names:
        rows = [per_label[name] for per_label in cases.values() if name in per_label]
        means: dict[str, float | int | None] = {"n": len(rows)}
        for key in ("dice", "hd95", "assd", "ravd", "nsd"):
            values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
            means[key] = float(np.mean(values)) if values else None
        out[name] = means
    return out
