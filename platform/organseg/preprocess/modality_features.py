"""Intensity features that tell CT, T1 in-phase, T1 out-of-phase and T2-SPIR apart, from stored units.

Computed once per series when the slice cache is built (the cache itself is windowed and normalised,
which erases the Hounsfield range) and again for a headerless volume at prediction time; the modality
classifier (:mod:`organseg.ensemble.modality_classifier`) learns from them. Each feature stands for a
physical difference:

- CT stores Hounsfield units, so air is below -200; MR magnitudes are never negative.
- Opposed phase cancels fat and water signal in voxels holding both: thin dark lines along every
  fat-water boundary (the India-ink artefact) that in-phase images do not have.
- T2-SPIR suppresses fat and makes fluid the brightest tissue, so most of the body sits low in the
  intensity range; T1 keeps fat bright.

Histogram bins were tried and left out: they vary more between patients than between sequences, and
the out-of-distribution guard then refused ordinary series.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Bumped whenever a feature changes, so caches and classifiers built with others are not mixed.
FEATURES_VERSION = 1
FEATURE_NAMES: tuple[str, ...] = (
    "fraction of voxels below -200 (air in Hounsfield units)",
    "fraction of body voxels on a thin dark line (fat-water cancellation)",
    "mean depth of thin dark lines in the body",
    "median body intensity (0-1 of the range)",
    "90th percentile of body intensity",
)
#: Slices used per series: evenly spaced, so a 500-slice CT costs no more than a short MR series.
MAX_SLICES = 16


def series_features(array: np.ndarray) -> np.ndarray:
    """The :data:`FEATURE_NAMES` of one series ``[z, y, x]`` in stored units (HU for CT)."""
    volume = np.asarray(array, dtype=np.float32)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.shape[0] > MAX_SLICES:
        volume = volume[np.linspace(0, volume.shape[0] - 1, MAX_SLICES).round().astype(int)]
    air = float((volume < -200).mean())
    lo, hi = np.percentile(volume, [0.5, 99.5])
    normalised = np.clip((volume - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    body = _body(normalised)
    if not body.any():
        body = np.ones_like(body)
    # depth of in-plane valleys: how much darker a voxel is than both of its neighbours on a line
    valley = np.zeros_like(normalised)
    for axis in (1, 2):
        before, after = np.roll(normalised, 1, axis), np.roll(normalised, -1, axis)
        valley = np.maximum(valley, np.minimum(before, after) - normalised)
    relative = valley / np.maximum(normalised + valley, 0.05)
    inside = normalised[body]
    return np.array(
        [
            air,
            float((relative[body] > 0.5).mean()),
            float(valley[body].mean()),
            float(np.median(inside)),
            float(np.percentile(inside, 90)),
        ],
        dtype=np.float64,
    )


def _body(normalised: np.ndarray) -> np.ndarray:
    """The patient, filled per slice and eroded, so the skin edge and the air outside do not count."""
    body = np.zeros(normalised.shape, dtype=bool)
    structure = np.ones((5, 5), dtype=bool)
    for k, plane in enumerate(normalised):
        filled = ndimage.binary_fill_holes(plane > 0.1)
        body[k] = ndimage.binary_erosion(filled, structure)
    return body
