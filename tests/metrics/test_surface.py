"""Border voxels and border-to-border distances against an independent brute-force computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from organseg.io.volume import Geometry
from organseg.metrics.surface import (
    border,
    orthogonal_spacing_zyx,
    surface_distances,
    voxel_volume_ml,
)

# -- independent reference implementation ------------------------------------------------------


def brute_border(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background face neighbour inside the array (outside counts as fg)."""
    padded = np.pad(mask, 1, constant_values=True)
    core = (slice(1, -1),) * 3
    out = np.zeros_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[core]
            out |= mask & ~neighbour
    return out


def brute_distances(
    ref: np.ndarray, pred: np.ndarray, geometry: Geometry
) -> tuple[np.ndarray, ...]:
    """All-pairs world distances through the geometry's 4×4 affine (index order x, y, z)."""
    affine = geometry.affine()

    def world(mask: np.ndarray) -> np.ndarray:
        zyx = np.argwhere(brute_border(mask))
        xyz1 = np.column_stack([zyx[:, ::-1], np.ones(len(zyx))])
        return (xyz1 @ affine.T)[:, :3]

    r, p = world(ref), world(pred)
    pairwise = np.sqrt(((r[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1))
    return pairwise.min(axis=1), pairwise.min(axis=0)


def rotation(seed: int, left_handed: bool) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != left_handed:
        q[:, 2] *= -1
    return q


masks = st.integers(0, 2**32 - 1).flatmap(
    lambda seed: st.tuples(
        st.just(seed),
        st.tuples(st.integers(2, 7), st.integers(2, 8), st.integers(2, 8)),
        st.floats(0.05, 0.7),
    )
)
spacings = st.tuples(*[st.floats(0.25, 4.0, allow_nan=False) for _ in range(3)])


def random_pair(seed: int, shape: tuple[int, int, int], fill: float) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    ref = rng.random(shape) < fill
    pred = ref ^ (rng.random(shape) < 0.15)  # a perturbed copy: overlapping but different borders
    ref.flat[rng.integers(ref.size)] = True
    pred.flat[rng.integers(pred.size)] = True
    return ref, pred


# -- border ---------------------------------------------------------------------------------------


def test_border_of_a_cube_is_its_shell() -> None:
    mask = np.zeros((7, 7, 7), bool)
    mask[1:6, 1:6, 1:6] = True
    expected = mask.copy()
    expected[2:5, 2:5, 2:5] = False
    np.testing.assert_array_equal(border(mask), expected)


def test_array_edge_is_not_a_surface() -> None:
    """``border_value=1``: a slab touching the array edge has a border on its inner face only."""
    mask = np.zeros((6, 5, 5), bool)
    mask[:3] = True
    expected = np.zeros_like(mask)
    expected[2] = True
    np.testing.assert_array_equal(border(mask), expected)
    assert not border(np.ones((4, 4, 4), bool)).any()


def test_single_voxel_is_its_own_border() -> None:
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    np.testing.assert_array_equal(border(mask), mask)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_border_matches_brute_force(params: tuple) -> None:
    seed, shape, fill = params
    mask = np.random.default_rng(seed).random(shape) < fill
    np.testing.assert_array_equal(border(mask), brute_border(mask))


# -- distances ------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks, spacings, st.integers(0, 10_000), st.booleans())
def test_distances_match_all_pairs_on_rotated_anisotropic_grids(
    params: tuple, spacing: tuple[float, float, float], rot_seed: int, left_handed: bool
) -> None:
    seed, shape, fill = params
    ref, pred = random_pair(seed, shape, fill)
    geometry = Geometry(
        spacing=spacing,
        origin=(10.0, -20.0, 1690.5),
        direction=tuple(rotation(rot_seed, left_handed).ravel()),
    )
    got = surface_distances(ref, pred, geometry)
    if not brute_border(ref).any() or not brute_border(pred).any():
        assert got is None
        return
    ref_to_pred, pred_to_ref = brute_distances(ref, pred, geometry)
    assert got is not None
    np.testing.assert_allclose(got.ref_to_pred, ref_to_pred, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.pred_to_ref, pred_to_ref, rtol=1e-6, atol=1e-6)
    pooled = np.concatenate([ref_to_pred, pred_to_ref])
    assert got.assd == pytest.approx(pooled.mean(), rel=1e-6, abs=1e-9)
    assert got.mssd == pytest.approx(pooled.max(), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(0, 10_000))
def test_sheared_grids_use_exact_world_distances(params: tuple, shear_seed: int) -> None:
    """A gantry-tilted series: the slice axis is oblique to the image plane."""
    seed, shape, fill = params
    ref, pred = random_pair(seed, shape, fill)
    rng = np.random.default_rng(shear_seed)
    slice_axis = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    slice_axis /= np.linalg.norm(slice_axis)
    direction = np.column_stack([[1.0, 0, 0], [0, 1.0, 0], slice_axis])
    geometry = Geometry(spacing=(0.7, 0.9, 2.5), direction=tuple(direction.ravel()))
    got = surface_distances(ref, pred, geometry)
    if got is None:
        return
    ref_to_pred, pred_to_ref = brute_distances(ref, pred, geometry)
    np.testing.assert_allclose(got.ref_to_pred, ref_to_pred, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.pred_to_ref, pred_to_ref, rtol=1e-9, atol=1e-9)


def test_far_apart_masks_measure_across_the_gap() -> None:
    ref = np.zeros((4, 4, 40), bool)
    pred = np.zeros_like(ref)
    ref[1, 1, 0] = True
    pred[1, 1, 39] = True
    got = surface_distances(ref, pred, Geometry(spacing=(0.5, 1.0, 3.0)))
    assert got is not None
    assert got.assd == pytest.approx(39 * 0.5)
    assert got.mssd == pytest.approx(39 * 0.5)


def test_identical_masks_are_at_distance_zero() -> None:
    mask = np.zeros((5, 6, 7), bool)
    mask[1:4, 2:5, 1:6] = True
    got = surface_distances(mask, mask, Geometry(spacing=(0.7, 0.7, 2.0)))
    assert got is not None
    assert got.assd == 0.0
    assert got.mssd == 0.0


def test_empty_or_borderless_masks_have_no_distances() -> None:
    empty = np.zeros((3, 3, 3), bool)
    full = np.ones((3, 3, 3), bool)
    some = empty.copy()
    some[1, 1, 1] = True
    assert surface_distances(empty, some) is None
    assert surface_distances(some, empty) is None
    assert surface_distances(full, some) is None
    with pytest.raises(ValueError, match="one shape"):
        surface_distances(some, np.zeros((3, 3, 4), bool))


# -- geometry helpers -------------------------------------------------------------------------------


def test_orthogonal_spacing_ignores_handedness_and_rejects_shear() -> None:
    chaos = Geometry(spacing=(0.7265625, 0.7265625, 2.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert orthogonal_spacing_zyx(chaos) == pytest.approx((2.0, 0.7265625, 0.7265625))
    sheared = Geometry(spacing=(1, 1, 1), direction=(1, 0, 0.1, 0, 1, 0, 0, 0, 0.995))
    assert orthogonal_spacing_zyx(sheared) is None


def test_voxel_volume_in_millilitres() -> None:
    assert voxel_volume_ml(Geometry(spacing=(0.5, 0.5, 4.0))) == pytest.approx(0.001)
    left = Geometry(spacing=(1.0, 2.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    assert voxel_volume_ml(left) == pytest.approx(0.006)
