"""Per-label metrics for any label set: agreement with MONAI and with organseg's own exact border
distances on random shapes with anisotropic spacing; ignore voxels; empty masks; volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import ndimage

from organseg.errors import DataError
from organseg.io.volume import Geometry
from organseg.labels import LabelSet
from organseg.metrics.labelwise import (
    DEFAULT_NSD_TOLERANCE_MM,
    evaluate_label,
    evaluate_label_maps,
    label_volumes_ml,
    mean_by_label,
    tolerances_for,
)
from organseg.metrics.surface import surface_distances, voxel_volume_ml

SHAPE = (18, 40, 34)
SPACING_ZYX = (3.0, 0.78, 1.3)  # anisotropic on every axis


def blob(seed: int, fill: float = 0.8) -> np.ndarray:
    """A random smooth shape (several components possible) kept off the array's edge."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.5)
    mask = field > np.quantile(field, fill)
    mask[[0, -1]] = mask[:, [0, -1]] = mask[:, :, [0, -1]] = False
    return mask


def geometry() -> Geometry:
    return Geometry(spacing=SPACING_ZYX[::-1])


@pytest.mark.parametrize("seed", range(4))
def test_each_metric_agrees_with_monai_and_with_exact_border_distances(seed):
    ref, pred = blob(3 * seed), blob(3 * seed + 1) | (blob(3 * seed + 2) & blob(3 * seed))
    tolerance = 1.7
    got = evaluate_label(ref, pred, SPACING_ZYX, tolerance)

    # MONAI on the whole (uncropped) arrays, one-hot with background, as its docs call it.
    one_hot = [torch.from_numpy(np.stack([~m, m]))[None] for m in (pred, ref)]
    spacing = list(SPACING_ZYX)
    assert got.dice == pytest.approx(float(compute_dice(*one_hot, include_background=False)))
    assert got.hd95 == pytest.approx(
        float(compute_hausdorff_distance(*one_hot, percentile=95, spacing=spacing)), rel=1e-6
    )
    assert got.assd == pytest.approx(
        float(compute_average_surface_distance(*one_hot, symmetric=True, spacing=spacing)),
        rel=1e-6,
    )
    assert got.nsd == pytest.approx(
        float(compute_surface_dice(*one_hot, class_thresholds=[tolerance], spacing=spacing)),
        rel=1e-6,
    )

    # An independent implementation: the CHAOS border distances (SimpleITK's exact transform).
    distances = surface_distances(ref, pred, geometry())
    a, b = distances.ref_to_pred, distances.pred_to_ref
    assert got.assd == pytest.approx(distances.assd, rel=1e-5)
    assert got.hd95 == pytest.approx(max(np.percentile(a, 95), np.percentile(b, 95)), rel=1e-5)
    within = ((a <= tolerance).sum() + (b <= tolerance).sum()) / (a.size + b.size)
    assert got.nsd == pytest.approx(within, rel=1e-5)
    overlap = 2 * (ref & pred).sum() / (ref.sum() + pred.sum())
    assert got.dice == pytest.approx(overlap)
    assert got.ravd == pytest.approx(abs(int(pred.sum()) - int(ref.sum())) / ref.sum() * 100)
    assert got.empty is None


def test_identical_masks_score_perfectly_and_a_shift_costs_one_slice():
    ref = blob(7)
    same = evaluate_label(ref, ref, SPACING_ZYX)
    assert (same.dice, same.hd95, same.assd, same.ravd, same.nsd) == (1.0, 0.0, 0.0, 0.0, 1.0)
    shifted = evaluate_label(ref, np.roll(ref, 1, axis=0), SPACING_ZYX, tolerance_mm=2.9)
    assert shifted.hd95 == pytest.approx(SPACING_ZYX[0])  # one slice along z
    assert shifted.nsd < 1.0  # a 3 mm shift exceeds a 2.9 mm tolerance somewhere


def test_empty_masks_get_explicit_answers_not_nan():
    empty, ref = np.zeros(SHAPE, bool), blob(1)
    both = evaluate_label(empty, empty, SPACING_ZYX)
    assert (both.dice, both.nsd, both.hd95, both.assd, both.ravd, both.empty) == (
        1.0,
        1.0,
        None,
        None,
        None,
        "both",
    )
    missed = evaluate_label(ref, empty, SPACING_ZYX)
    assert (missed.dice, missed.nsd, missed.hd95, missed.ravd, missed.empty) == (
        0.0,
        0.0,
        None,
        100.0,
        "prediction",
    )
    invented = evaluate_label(empty, ref, SPACING_ZYX)
    assert (invented.dice, invented.ravd, invented.empty) == (0.0, None, "reference")


def three_labels(ignore: bool = False) -> LabelSet:
    labels = {"background": 0, "liver": 1, "pancreas": 2, "aorta": 3}
    if ignore:
        labels["ignore"] = 4
    return LabelSet.from_nnunet(labels)


def label_maps() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    for value, seed in ((1, 11), (2, 12), (3, 13)):
        ref[blob(seed, 0.9) & (ref == 0)] = value
        pred[blob(seed + 20, 0.9) & (pred == 0)] = value
    return ref, pred


def test_label_maps_score_each_label_as_its_own_binary_masks():
    ref, pred = label_maps()
    label_set = three_labels()
    results = evaluate_label_maps(ref, pred, geometry(), label_set, {"aorta": 2.0})
    assert list(results) == ["liver", "pancreas", "aorta"]
    for value, name in enumerate(label_set.names, start=1):
        tolerance = 2.0 if name == "aorta" else DEFAULT_NSD_TOLERANCE_MM
        expected = evaluate_label(
            ref == value, pred == value, SPACING_ZYX, tolerance, voxel_volume_ml(geometry())
        )
        assert results[name] == expected


def test_ignore_voxels_count_for_no_label():
    ref, pred = label_maps()
    ignored = blob(40, 0.7)
    ref_with_ignore = np.where(ignored, 4, ref).astype(np.uint8)
    results = evaluate_label_maps(ref_with_ignore, pred, geometry(), three_labels(ignore=True))
    for value, name in enumerate(("liver", "pancreas", "aorta"), start=1):
        expected = evaluate_label(
            ref_with_ignore == value,
            (pred == value) & ~ignored,
            SPACING_ZYX,
            voxel_ml=voxel_volume_ml(geometry()),
        )
        assert results[name] == expected
    # Predicting anything inside the ignored region changes nothing.
    painted = np.where(ignored, 1, pred).astype(np.uint8)
    assert evaluate_label_maps(ref_with_ignore, painted, geometry(), three_labels(True)) == results


def test_values_outside_the_label_set_and_sheared_grids_are_refused():
    ref, pred = label_maps()
    pred[0, 0, 0] = 9
    with pytest.raises(DataError, match=r"prediction holds values \[9\]"):
        evaluate_label_maps(ref, pred, geometry(), three_labels())
    sheared = Geometry(
        spacing=(1.0, 1.0, 2.0), direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.866)
    )
    with pytest.raises(DataError, match="not orthogonal"):
        evaluate_label_maps(ref, ref, sheared, three_labels())
    with pytest.raises(DataError, match="unknown label"):
        tolerances_for(three_labels(), {"kidney": 1.0})


def test_volumes_and_means_per_label():
    ref, pred = label_maps()
    volumes = label_volumes_ml(pred, geometry(), three_labels())
    voxel_ml = float(np.prod(SPACING_ZYX)) / 1000
    assert volumes == {
        name: pytest.approx(float((pred == v).sum()) * voxel_ml)
        for v, name in enumerate(("liver", "pancreas", "aorta"), start=1)
    }
    first = evaluate_label_maps(ref, pred, geometry(), three_labels())
    second = evaluate_label_maps(ref, ref, geometry(), three_labels())
    means = mean_by_label({"a": first, "b": second})
    assert means["liver"]["n"] == 2
    assert means["liver"]["dice"] == pytest.approx((first["liver"].dice + 1.0) / 2)


def test_region_labels_cover_each_of_their_values():
    """nnU-Net region-based sets (BraTS-style nested regions): a region is every value it lists."""
    regions = LabelSet.from_nnunet(
        {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
        regions_class_order=[1, 2, 3],
    )
    ref, pred = label_maps()
    results = evaluate_label_maps(ref, pred, geometry(), regions)
    voxel_ml = voxel_volume_ml(geometry())
    for name, values in (("whole", [1, 2, 3]), ("core", [2, 3]), ("enhancing", [3])):
        expected = evaluate_label(
            np.isin(ref, values), np.isin(pred, values), SPACING_ZYX, voxel_ml=voxel_ml
        )
        assert results[name] == expected
