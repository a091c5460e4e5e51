"""Post-processing with a model's own label set: its values, and the largest component kept only for
the labels that ask for it (solid organs), never for a vessel."""

from __future__ import annotations

import numpy as np

from organseg.config import PostprocessConfig
from organseg.ensemble.postprocess import labels_from_member_maps, probabilities_to_labels
from organseg.labels import LabelSet


def _two_pieces(z: int = 4, size: int = 16) -> np.ndarray:
    """A probability map with a large and a small separate blob."""
    probs = np.zeros((z, size, size), np.float32)
    probs[:, 1:7, 1:7] = 0.9
    probs[:, 10:12, 10:12] = 0.9
    return probs


def test_label_set_values_and_per_label_components() -> None:
    labels = LabelSet.from_nnunet({"background": 0, "pancreas": 1, "aorta": 2})
    assert labels["pancreas"].largest_component
    assert not labels["aorta"].largest_component
    blob = _two_pieces()
    probs = np.stack([blob, np.zeros_like(blob)], axis=1)  # pancreas only
    cfg = PostprocessConfig(component_threshold=None)
    out = probabilities_to_labels(probs, ["pancreas", "aorta"], cfg, labels)
    assert set(np.unique(out)) == {0, 1}
    assert not out[:, 10:12, 10:12].any()  # the pancreas' small piece is dropped
    vessel = np.stack([np.zeros_like(blob), blob], axis=1)
    out = probabilities_to_labels(vessel, ["pancreas", "aorta"], cfg, labels)
    assert set(np.unique(out)) == {0, 2}
    assert (out[:, 10:12, 10:12] == 2).all()  # the aorta keeps every piece
    # the uint8 member-map path gives the same labels
    maps = {
        "pancreas": [np.zeros(blob.shape, np.uint8)],
        "aorta": [np.round(blob * 255).astype(np.uint8)],
    }
    masks = labels_from_member_maps(maps, ["pancreas", "aorta"], cfg, label_set=labels)
    np.testing.assert_array_equal(masks.labels, out)
    assert masks.voxels == {"pancreas": 0, "aorta": int((out == 2).sum())}


def test_values_beyond_the_chaos_ids() -> None:
    labels = LabelSet.from_names(["liver", "spleen", "stomach", "gallbladder", "pancreas", "aorta"])
    probs = np.zeros((2, 6, 8, 8), np.float32)
    probs[:, 5, 2:5, 2:5] = 0.95  # aorta, value 6
    out = probabilities_to_labels(probs, list(labels.names), PostprocessConfig(), labels)
    assert set(np.unique(out)) == {0, 6}
