"""Labelled datasets in the layouts teams ship them in: nnU-Net v2 raw and the Medical Segmentation
Decathlon (CHAOS folders are read by :mod:`organseg.io.chaos`).

- :func:`detect_format` says which layout a folder is in, and why.
- :func:`open_nnunet` / :func:`open_msd` read one as it lies; ``.check()`` lists every problem, each
  naming its file or ``dataset.json`` key, before anything trains.
- :mod:`organseg.datasets.write` writes both layouts; :mod:`organseg.datasets.convert` turns CHAOS
  folders into nnU-Net datasets.
"""

from organseg.datasets.base import CaseFiles, LabelledCase, LabelledDataset, Problem
from organseg.datasets.detect import FORMATS, detect_format, open_dataset
from organseg.datasets.msd import open_msd
from organseg.datasets.nnunet import open_nnunet

__all__ = [
    "FORMATS",
    "CaseFiles",
    "LabelledCase",
    "LabelledDataset",
    "Problem",
    "detect_format",
    "open_dataset",
    "open_msd",
    "open_nnunet",
]
