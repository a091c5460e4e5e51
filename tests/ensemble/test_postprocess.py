import numpy as np
import pytest

from organseg.config import PostprocessConfig
from organseg.ensemble.postprocess import disagreement, keep_components, probabilities_to_labels


def _blob(shape, center, radius):
    zz, yy, xx = np.indices(shape)
    return ((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2) <= radius**2


def test_largest_component_only() -> None:
    big, small = _blob((10, 40, 40), (5, 10, 10), 5), _blob((10, 40, 40), (5, 30, 30), 2)
    probs = np.where(big | small, 0.9, 0.1).astype(np.float32)
    kept = keep_components(probs >= 0.5, probs, PostprocessConfig(component_threshold=None))
    np.testing.assert_array_equal(kept, big)


def test_hysteresis_drops_components_without_a_confident_voxel() -> None:
    a, b = _blob((10, 40, 40), (5, 10, 10), 3), _blob((10, 40, 40), (5, 30, 30), 4)
    probs = np.zeros((10, 40, 40), np.float32)
    probs[a] = 0.7  # has seeds at >= 0.6
    probs[b] = 0.55  # larger, but never confident
    cfg = PostprocessConfig(threshold=0.5, component_threshold=0.6, largest_component=True)
    np.testing.assert_array_equal(keep_components(probs >= 0.5, probs, cfg), a)
    cfg = PostprocessConfig(threshold=0.5, component_threshold=None, largest_component=True)
    np.testing.assert_array_equal(keep_components(probs >= 0.5, probs, cfg), b)


def test_components_are_six_connected() -> None:
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touch only at a corner: two pieces
    probs = mask.astype(np.float32)
    kept = keep_components(mask, probs, PostprocessConfig(component_threshold=None))
    assert kept.sum() == 1


def test_overlaps_go_to_the_most_probable_organ() -> None:
    probs = np.zeros((1, 2, 4, 4), np.float32)
    probs[0, 0, :, :2] = 0.9  # liver
    probs[0, 1, :, 1:] = 0.8  # spleen, overlapping column 1
    probs[0, 1, :, 1] = 0.95
    cfg = PostprocessConfig(component_threshold=None, largest_component=False)
    labels = probabilities_to_labels(probs, ["liver", "spleen"], cfg)
    assert (labels[0, :, 0] == 1).all()
    assert (labels[0, :, 1] == 4).all()  # spleen wins where it is more probable
    assert (labels[0, :, 2:] == 4).all()


def test_empty_prediction_and_bad_shape() -> None:
    cfg = PostprocessConfig()
    assert probabilities_to_labels(np.zeros((2, 1, 4, 4), np.float32), ["liver"], cfg).sum() == 0
    with pytest.raises(ValueError, match="expected"):
        probabilities_to_labels(np.zeros((2, 2, 4, 4), np.float32), ["liver"], cfg)


def test_disagreement() -> None:
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 255
    assert disagreement([a], 128) == 0.0
    assert disagreement([a, a], 128) == 0.0
    b = np.zeros_like(a)
    b[1:3] = 255
    assert disagreement([a, b], 128) == pytest.approx(0.5)
    assert disagreement([np.zeros_like(a)] * 2, 128) == 0.0
