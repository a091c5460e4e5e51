"""Preprocessing shared by training, local prediction and serving: intensities, resampling, channels,
augmentation and the cached slice dataset."""

from organseg.preprocess.augment import AugmentConfig, SliceAugmenter
from organseg.preprocess.channels import stack_t1, to_channels
from organseg.preprocess.config import PreprocessConfig
from organseg.preprocess.dataset import (
    SampleRecord,
    SliceCache,
    SliceDataset,
    kfold_splits,
    patient_split,
)
from organseg.preprocess.intensity import ct_window, mr_normalize, normalize
from organseg.preprocess.pipeline import PreparedVolume, prepare_volume
from organseg.preprocess.resample import (
    inplane_geometry,
    resample_inplane,
    resample_to_grid,
    resize_slices,
)

__all__ = [
    "AugmentConfig",
    "PreparedVolume",
    "PreprocessConfig",
    "SampleRecord",
    "SliceAugmenter",
    "SliceCache",
    "SliceDataset",
    "ct_window",
    "inplane_geometry",
    "kfold_splits",
    "mr_normalize",
    "normalize",
    "patient_split",
    "prepare_volume",
    "resample_inplane",
    "resample_to_grid",
    "resize_slices",
    "stack_t1",
    "to_channels",
]
