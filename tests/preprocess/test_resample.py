"""In-plane resampling keeps the field of view; the fast per-slice path agrees with SimpleITK."""

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.io import Geometry, Modality, Volume
from organseg.preprocess import (
    inplane_geometry,
    resample_inplane,
    resample_to_grid,
    resize_slices,
)

# Left-handed (z runs against the patient axis) and rotated in-plane, as real series can be.
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
GEOMETRY = Geometry(spacing=(0.8, 0.7, 2.5), origin=(-100.0, 40.0, 1200.0), direction=DIRECTION)


def _labels(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 5, size=shape, dtype=np.uint8)


def _fov_corners(geometry: Geometry, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """World coordinates of the outer pixel edges of the first and last slices."""
    image = sitk.Image([int(s) for s in shape_zyx[::-1]], sitk.sitkUInt8)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    z, y, x = shape_zyx
    corners = [
        (-0.5, -0.5, 0),
        (x - 0.5, -0.5, 0),
        (-0.5, y - 0.5, z - 1),
        (x - 0.5, y - 0.5, z - 1),
    ]
    return np.array([image.TransformContinuousIndexToPhysicalPoint(c) for c in corners])


def test_geometry_keeps_field_of_view_and_slices() -> None:
    shape = (6, 40, 50)
    new = inplane_geometry(GEOMETRY, shape, 64)
    assert new.spacing == pytest.approx((0.8 * 50 / 64, 0.7 * 40 / 64, 2.5))
    assert new.direction == GEOMETRY.direction
    np.testing.assert_allclose(
        _fov_corners(new, (6, 64, 64)), _fov_corners(GEOMETRY, shape), atol=1e-9
    )


def test_label_round_trip_on_integer_scale_is_exact() -> None:
    labels = Volume(_labels((4, 32, 32)), GEOMETRY, Modality.CT)
    up = resample_inplane(labels, 64, is_label=True)
    assert up.shape == (4, 64, 64)
    assert up.array.dtype == np.uint8
    assert up.geometry.isclose(inplane_geometry(GEOMETRY, labels.shape, 64))
    back = resample_to_grid(up.array, up.geometry, labels, is_label=True)
    np.testing.assert_array_equal(back, labels.array)
    # The fast path does the same both ways.
    np.testing.assert_array_equal(resize_slices(labels.array, 64, order=0), up.array)
    np.testing.assert_array_equal(resize_slices(up.array, 32, order=0), labels.array)


@pytest.mark.parametrize("size", [32, 96])
def test_fast_path_matches_simpleitk_linear(size: int) -> None:
    rng = np.random.default_rng(1)
    image = Volume(rng.normal(size=(3, 48, 40)).astype(np.float32), GEOMETRY, Modality.MR_T2SPIR)
    reference = resample_inplane(image, size)
    assert reference.array.dtype == np.float32
    assert reference.modality is Modality.MR_T2SPIR
    fast = resize_slices(image.array, size, order=1)
    np.testing.assert_allclose(fast, reference.array, atol=1e-4)  # float32 rounding of the map


def test_probabilities_back_to_original_grid_multichannel() -> None:
    rng = np.random.default_rng(2)
    original = Volume(np.zeros((3, 48, 40), np.int16), GEOMETRY, Modality.CT)
    geometry = inplane_geometry(GEOMETRY, original.shape, 32)
    probs = rng.random((3, 4, 32, 32), dtype=np.float32)
    back = resample_to_grid(probs, geometry, (original.shape, original.geometry))
    assert back.shape == (3, 4, 48, 40)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, resize_slices(probs, (48, 40), order=1), atol=1e-5)
    # Channels are resampled independently: channel k equals the single-channel result.
    single = resample_to_grid(probs[:, 2], geometry, original)
    np.testing.assert_allclose(back[:, 2], single, atol=1e-6)


def test_resize_slices_keeps_label_dtypes_and_rejects_bad_input() -> None:
    labels = _labels((2, 8, 8)).astype(np.int32) * 100
    out = resize_slices(labels, 16, order=0)
    assert out.dtype == np.int32
    assert set(np.unique(out)) <= set(np.unique(labels))
    assert resize_slices(labels > 0, 16, order=0).dtype == np.bool_
    half = resize_slices(np.ones((1, 8, 8), np.float16), 8)
    assert half.dtype == np.float32
    assert half.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="order"):
        resize_slices(labels, 16, order=3)
    with pytest.raises(ValueError, match="shape"):
        resize_slices(np.zeros((8, 8)), 16)
