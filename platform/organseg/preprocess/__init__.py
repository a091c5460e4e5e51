"""Preprocessing shared by training, local prediction and serving: intensities, resampling, channels,
augmentation and the cached slice dataset.

Names load on first use (PEP 562), so ``organseg.preprocess.config`` -- what an experiment config needs
-- does not pull in torch through the augmenter or the dataset.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES: dict[str, str] = {
    "AugmentConfig": "config",
    "PreprocessConfig": "config",
    "SliceAugmenter": "augment",
    "stack_t1": "channels",
    "to_channels": "channels",
    "SampleRecord": "dataset",
    "SliceCache": "dataset",
    "SliceDataset": "dataset",
    "kfold_splits": "splits",
    "patient_split": "splits",
    "ct_window": "intensity",
    "mr_normalize": "intensity",
    "normalize": "intensity",
    "PreparedVolume": "pipeline",
    "prepare_volume": "pipeline",
    "inplane_geometry": "resample",
    "resample_inplane": "resample",
    "resample_to_grid": "resample",
    "resize_slices": "resample",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
