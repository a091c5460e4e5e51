"""Evaluation: the CHAOS metrics and 0–100 scores as the organizers compute them, and per-label
metrics for any label set.

- :mod:`organseg.metrics.surface`: border voxels and exact border-to-border distances (mm);
- :mod:`organseg.metrics.chaos`: per-organ metrics, scores, Table-1 figures, edge-case rules;
- :mod:`organseg.metrics.inputs`: masks from PNG series, CHAOS case folders and volume files;
- :mod:`organseg.metrics.dataset`: a folder of predictions against a CHAOS dataset;
- :mod:`organseg.metrics.labelwise`: per-label Dice, HD95, ASSD, RAVD and NSD for any label set (MONAI);
- :mod:`organseg.metrics.labelset_eval`: nnU-Net/MSD label maps, volume or DICOM-SEG predictions.
"""

from organseg.metrics.chaos import (
    METRIC_FIELDS,
    OrganMetrics,
    assd_score,
    chaos_score,
    dice_score,
    evaluate_masks,
    evaluate_organ,
    mssd_score,
    ravd_score,
)
from organseg.metrics.dataset import CaseResult, DatasetReport, evaluate_case, evaluate_dataset
from organseg.metrics.inputs import EvaluationInput, MaskSource, load_mask, load_pair
from organseg.metrics.surface import SurfaceDistances, border, surface_distances

__all__ = [
    "METRIC_FIELDS",
    "CaseResult",
    "DatasetReport",
    "EvaluationInput",
    "MaskSource",
    "OrganMetrics",
    "SurfaceDistances",
    "assd_score",
    "border",
    "chaos_score",
    "dice_score",
    "evaluate_case",
    "evaluate_dataset",
    "evaluate_masks",
    "evaluate_organ",
    "load_mask",
    "load_pair",
    "mssd_score",
    "ravd_score",
    "surface_distances",
]
