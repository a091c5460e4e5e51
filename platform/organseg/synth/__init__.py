"""Synthetic CHAOS-layout datasets: phantoms rendered as real DICOM series with PNG ground truth.

- :func:`write_dataset` writes ``OUT/Train_Sets/{CT,MR}/<id>/...`` exactly as CHAOS lays it out.
- :func:`make_phantom` returns one image, its labels and spacing in memory, for tests and demos.
"""

from organseg.synth.case import Case, Series, case_seed, default_slices, make_case, make_phantom
from organseg.synth.dataset import write_dataset

__all__ = [
    "Case",
    "Series",
    "case_seed",
    "default_slices",
    "make_case",
    "make_phantom",
    "write_dataset",
]
