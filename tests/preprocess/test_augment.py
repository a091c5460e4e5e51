"""Slice augmentation: seeded, and the mask follows the image through every geometric change."""

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from organseg.preprocess import AugmentConfig, SliceAugmenter

SIZE = 128


def _phantom() -> np.ndarray:
    """(H, W) labels: a disk (1) and an off-centre bar (2), so flips and rotations are visible."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[(yy - 50) ** 2 + (xx - 45) ** 2 < 22**2] = 1
    labels[80:100, 60:110] = 2
    return labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))


def test_same_seed_same_output_other_seed_differs() -> None:
    labels = _phantom()
    image = np.stack([labels / 2.0, np.random.default_rng(0).random((SIZE, SIZE))]).astype(
        np.float32
    )
    aug = SliceAugmenter(AugmentConfig(affine_p=1.0, elastic_p=1.0, noise_p=1.0, histogram_p=1.0))
    a_img, a_mask = aug(image, labels, np.random.default_rng(42))
    b_img, b_mask = aug(image, labels, np.random.default_rng(42))
    c_img, c_mask = aug(image, labels, np.random.default_rng(43))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_mask, c_mask)
    assert a_img.dtype == np.float32
    assert a_img.shape == image.shape
    assert a_mask.dtype == np.uint8
    assert set(np.unique(a_mask)) <= {0, 1, 2}
    # A pickled copy (what a DataLoader worker gets) behaves the same.
    clone = pickle.loads(pickle.dumps(aug))
    np.testing.assert_array_equal(clone(image, labels, np.random.default_rng(42))[0], a_img)


@pytest.mark.parametrize("seed", range(6))
def test_label_map_stays_aligned_with_image(seed: int) -> None:
    labels = _phantom()
    aug = SliceAugmenter(AugmentConfig.geometric_only(flip_horizontal_p=0.5, elastic_alpha=6.0))
    # The image *is* the mask: one float channel per organ, interpolated linearly.
    image = np.stack([labels == 1, labels == 2]).astype(np.float32)
    image, mask = aug(image, labels, np.random.default_rng(seed))
    for organ in (1, 2):
        assert _iou(mask == organ, labels == organ) < 0.9  # it moved...
        assert _iou(image[organ - 1] >= 0.5, mask == organ) > 0.95, organ  # ...and stayed aligned
    assert mask.any()


def test_one_hot_mask_stays_aligned() -> None:
    labels = _phantom()
    one_hot = np.stack([labels == 1, labels == 2]).astype(np.float32)
    aug = SliceAugmenter(AugmentConfig.geometric_only())
    image, mask = aug(one_hot.copy(), one_hot, np.random.default_rng(3))
    assert mask.shape == one_hot.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    for k in range(2):
        assert _iou(image[k] >= 0.5, mask[k] > 0) > 0.95


def test_flips_are_exact_and_horizontal_is_off_by_default() -> None:
    labels = _phantom()
    image = labels[None].astype(np.float32)
    flip_v = SliceAugmenter(AugmentConfig(affine_p=0.0, elastic_p=0.0, flip_vertical_p=1.0,
                                          noise_p=0.0, intensity_p=0.0, histogram_p=0.0))  # fmt: skip
    out, mask = flip_v(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(mask, labels[::-1])
    np.testing.assert_allclose(out[0], labels[::-1].astype(np.float32), atol=1e-5)
    assert AugmentConfig().flip_horizontal_p == 0.0
    flip_h = SliceAugmenter(
        flip_v.cfg.model_copy(update={"flip_vertical_p": 0.0, "flip_horizontal_p": 1.0})
    )
    np.testing.assert_array_equal(
        flip_h(image, labels, np.random.default_rng(0))[1], labels[:, ::-1]
    )


def test_intensity_ops_leave_mask_and_geometry_alone() -> None:
    labels = _phantom()
    image = (labels[None] / 2.0).astype(np.float32)
    cfg = AugmentConfig(affine_p=0.0, elastic_p=0.0, flip_vertical_p=0.0,
                        noise_p=1.0, intensity_p=1.0, histogram_p=1.0)  # fmt: skip
    out, mask = SliceAugmenter(cfg)(image, labels, np.random.default_rng(5))
    np.testing.assert_array_equal(mask, labels)
    assert not np.allclose(out, image)
    assert abs(float(out.mean() - image.mean())) < 0.3  # changed, not destroyed


def test_disabled_returns_copies() -> None:
    labels = _phantom()
    image = labels[None].astype(np.float32)
    out, mask = SliceAugmenter(AugmentConfig(enabled=False))(
        image, labels, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(mask, labels)
    assert out is not image
    assert mask is not labels


def test_fill_outside_is_the_channel_minimum() -> None:
    image = np.full((1, 64, 64), -0.7, np.float32)  # z-scored MR background
    image[0, 16:48, 16:48] = 2.0
    cfg = AugmentConfig.geometric_only(elastic_p=0.0, scale=(0.6, 0.6))
    out, _ = SliceAugmenter(cfg)(image, np.zeros((64, 64), np.uint8), np.random.default_rng(0))
    assert out.min() >= -0.7 - 1e-5
    assert np.isclose(out[0, 0, 0], -0.7)


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="affine_p"):
        AugmentConfig(affine_p=1.5)
    with pytest.raises(ValidationError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))
    with pytest.raises(ValidationError, match="rotate"):
        AugmentConfig(rotate=10)
    with pytest.raises(ValueError, match="mask"):
        SliceAugmenter()(
            np.zeros((1, 8, 8), np.float32), np.zeros((4, 4)), np.random.default_rng(0)
        )
