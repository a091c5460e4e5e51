"""Per-organ CHAOS metrics, their 0–100 scores, the Table-1 figures and the defined edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Geometry
from organseg.metrics.chaos import (
    METRIC_FIELDS,
    assd_score,
    chaos_score,
    dice_score,
    evaluate_masks,
    evaluate_organ,
    mssd_score,
    ravd_score,
)

GEOMETRY = Geometry(spacing=(0.5, 1.0, 2.0))  # 1 mm³ voxels: 0.001 mL


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        (dice_score, 0.79, 0.0),
        (dice_score, 0.8, 80.0),
        (dice_score, 0.978, 97.8),
        (dice_score, 1.0, 100.0),
        (ravd_score, 0.0, 100.0),
        (ravd_score, 2.0, 60.0),
        (ravd_score, 5.0, 0.0),
        (ravd_score, 5.01, 0.0),
        (ravd_score, math.inf, 0.0),
        (assd_score, 3.0, 80.0),
        (assd_score, 15.0, 0.0),
        (assd_score, 15.5, 0.0),
        (mssd_score, 30.0, 50.0),
        (mssd_score, 14.0, 100.0 - 14.0 * 5.0 / 3.0),
        (mssd_score, 60.0, 0.0),
        (mssd_score, math.inf, 0.0),
    ],
)
def test_score_thresholds(function, value: float, expected: float) -> None:
    assert function(value) == pytest.approx(expected, abs=1e-12)


def test_organ_score_is_the_mean_of_the_four() -> None:
    assert chaos_score(0.9, 1.0, 1.5, 30.0) == pytest.approx((90 + 80 + 90 + 50) / 4)


def cube(shape: tuple[int, int, int], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_shifted_cube_by_hand() -> None:
    """4×4×4 reference, prediction shifted one voxel along x: every figure worked out by hand."""
    ref = cube((8, 8, 8), (2, 2, 2), (6, 6, 6))
    pred = cube((8, 8, 8), (2, 2, 3), (6, 6, 7))
    m = evaluate_organ(ref, pred, GEOMETRY)
    assert m.dice == pytest.approx(2 * 48 / 128)
    assert m.jaccard == pytest.approx(48 / 80)
    assert m.ravd == 0.0
    assert m.sensitivity == pytest.approx(48 / 64)
    assert m.specificity == pytest.approx((512 - 80) / (512 - 64))
    assert m.volume_error_ml == 0.0
    assert m.ref_volume_ml == pytest.approx(0.064)
    # x spacing is 0.5 mm: the far faces are one step (0.5 mm) apart, everything else touches.
    assert m.mssd == pytest.approx(0.5)
    assert 0.0 < m.assd < 0.5
    assert m.dice_score == 0.0  # DICE 0.75 < 0.8
    assert m.score == pytest.approx((0 + 100 + (100 - 20 / 3 * m.assd) + (100 - 5 / 3 * 0.5)) / 4)
    assert m.empty is None


def test_ravd_is_absolute_and_relative_to_the_reference() -> None:
    ref = cube((6, 6, 6), (1, 1, 1), (5, 5, 5))  # 64 voxels
    smaller = cube((6, 6, 6), (1, 1, 1), (5, 5, 4))  # 48 voxels
    assert evaluate_organ(ref, smaller, GEOMETRY).ravd == pytest.approx(25.0)
    assert evaluate_organ(smaller, ref, GEOMETRY).ravd == pytest.approx(100 * 16 / 48)
    assert evaluate_organ(ref, smaller, GEOMETRY).volume_error_ml == pytest.approx(0.016)


def test_both_empty_is_a_perfect_match() -> None:
    empty = np.zeros((4, 4, 4), bool)
    m = evaluate_organ(empty, empty, GEOMETRY)
    assert (m.dice, m.jaccard, m.ravd, m.assd, m.mssd) == (1.0, 1.0, 0.0, 0.0, 0.0)
    assert m.score == 100.0
    assert math.isnan(m.sensitivity)
    assert m.specificity == 1.0
    assert m.empty == "both"


def test_empty_reference() -> None:
    pred = cube((4, 4, 4), (1, 1, 1), (3, 3, 3))
    m = evaluate_organ(np.zeros_like(pred), pred, GEOMETRY)
    assert m.dice == 0.0
    assert m.jaccard == 0.0
    assert math.isinf(m.ravd)
    assert math.isinf(m.assd)
    assert math.isinf(m.mssd)
    assert m.score == 0.0
    assert math.isnan(m.sensitivity)
    assert m.empty == "reference"


def test_empty_prediction() -> None:
    ref = cube((4, 4, 4), (1, 1, 1), (3, 3, 3))
    m = evaluate_organ(ref, np.zeros_like(ref), GEOMETRY)
    assert m.dice == 0.0
    assert m.ravd == 100.0
    assert m.sensitivity == 0.0
    assert math.isinf(m.assd)
    assert math.isinf(m.mssd)
    assert m.score == 0.0
    assert m.volume_error_ml == pytest.approx(0.008)
    assert m.empty == "prediction"


def test_mask_filling_the_array_has_no_surface() -> None:
    full = np.ones((3, 3, 3), bool)
    assert evaluate_organ(full, full, GEOMETRY).mssd == 0.0
    part = cube((3, 3, 3), (0, 0, 0), (2, 3, 3))
    m = evaluate_organ(full, part, GEOMETRY)
    assert math.isinf(m.assd)
    assert m.dice == pytest.approx(2 * 18 / 45)
    assert math.isnan(m.specificity)  # no reference background at all


def test_to_dict_is_json_safe_and_ordered() -> None:
    ref = cube((4, 4, 4), (1, 1, 1), (3, 3, 3))
    values = evaluate_organ(ref, np.zeros_like(ref), GEOMETRY).to_dict()
    assert tuple(values) == METRIC_FIELDS
    assert values["assd"] is None
    assert values["mssd"] is None
    assert values["ravd"] == 100.0
    text = json.dumps(values, allow_nan=False)
    assert json.loads(text)["empty"] == "prediction"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.tuples(*[st.floats(0.3, 3.0) for _ in range(3)]))
def test_overlap_figures_match_set_arithmetic(seed: int, spacing: tuple[float, ...]) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(2, 7, size=3))
    ref = rng.random(shape) < rng.uniform(0.1, 0.8)
    pred = rng.random(shape) < rng.uniform(0.1, 0.8)
    geometry = Geometry(spacing=spacing)
    m = evaluate_organ(ref, pred, geometry)
    r = {tuple(i) for i in np.argwhere(ref)}
    p = {tuple(i) for i in np.argwhere(pred)}
    everything = {tuple(i) for i in np.ndindex(*shape)}
    if r or p:
        assert m.dice == pytest.approx(2 * len(r & p) / (len(r) + len(p)))
        assert m.jaccard == pytest.approx(len(r & p) / len(r | p))
    if r:
        assert m.ravd == pytest.approx(abs(len(p) - len(r)) / len(r) * 100)
        assert m.sensitivity == pytest.approx(len(r & p) / len(r))
    if everything - r:
        negatives = everything - r
        assert m.specificity == pytest.approx(len(negatives - p) / len(negatives))
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000
    assert m.volume_error_ml == pytest.approx(abs(len(p) - len(r)) * voxel_ml)
    expected_score = (dice_score(m.dice) + ravd_score(m.ravd) + assd_score(m.assd)) / 4
    assert m.score == pytest.approx(expected_score + mssd_score(m.mssd) / 4)


def test_evaluate_masks_picks_present_organs_and_checks_inputs() -> None:
    ref = np.zeros((4, 5, 6), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, 1:3] = 1
    pred[1:3, 1:3, 1:4] = 1
    pred[0, 0, 0] = 4  # a spurious spleen voxel in the prediction
    out = evaluate_masks(ref, pred, GEOMETRY)
    assert list(out) == ["liver", "spleen"]
    assert out["spleen"].empty == "reference"
    assert out["liver"].dice == pytest.approx(16 / 20)
    only = evaluate_masks(ref, pred, GEOMETRY, organs=["right_kidney"])
    assert list(only) == ["right_kidney"]
    assert only["right_kidney"].empty == "both"
    assert list(evaluate_masks(np.zeros_like(ref), np.zeros_like(ref))) == ["liver"]
    with pytest.raises(ConfigError, match="pancreas"):
        evaluate_masks(ref, pred, GEOMETRY, organs=["pancreas"])
    with pytest.raises(DataError, match=r"\(4, 5, 6\).*\(4, 5, 5\)"):
        evaluate_masks(ref, pred[..., :5], GEOMETRY)
