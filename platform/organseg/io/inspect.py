"""What is in a dataset: per-series modality, geometry, organs and problems, for ``organseg data inspect``."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from organseg.errors import DataError
from organseg.io.chaos import CaseRef, discover_cases, load_case
from organseg.io.dicom import file_order_warning
from organseg.io.readers import read_any
from organseg.io.volume import Volume
from organseg.organs import LABEL_NAMES


@dataclass
class CaseReport:
    """One inspected series. ``shape`` is (z, y, x); ``spacing`` is (x, y, z) in mm."""

    case: str
    modality: str
    shape: list[int] | None = None
    spacing: list[float] | None = None
    slices: int | None = None
    organs: dict[str, int] = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def organ_voxel_counts(label: Volume | None) -> dict[str, int]:
    """Voxels of each organ present in a label map (organ name → count, CHAOS label order); empty
    without a label map."""
    if label is None:
        return {}
    counts = np.bincount(label.array.ravel(), minlength=len(LABEL_NAMES) + 1)
    return {LABEL_NAMES[i]: int(counts[i]) for i in sorted(LABEL_NAMES) if counts[i] > 0}


def _report_volume(report: CaseReport, image: Volume, label: Volume | None) -> None:
    report.shape = list(image.shape)
    report.spacing = [float(s) for s in image.spacing]
    report.slices = image.shape[0]
    report.organs = organ_voxel_counts(label)


def _inspect_ref(ref: CaseRef) -> CaseReport:
    report = CaseReport(case=ref.case_id, modality=ref.modality.value, source=str(ref.image_dir))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            case = load_case(ref)
            _report_volume(report, case.image, case.label)
        except DataError as exc:
            report.error = str(exc)
    report.warnings = [str(w.message) for w in caught]
    if report.error is None:
        disagreement = file_order_warning(ref.image_dir)
        if disagreement:  # CHAOS pairs masks by file name; a scrambled folder pairs them wrongly
            report.warnings.append(f"{ref.image_dir}: {disagreement}")
    if ref.mask_dir is None and ref.split == "train":
        report.warnings.append(
            f"{ref.image_dir.parent}: no Ground folder; no labels for this series"
        )
    return report


def inspect_dataset(path: Path | str) -> list[CaseReport]:
    """Reports for every series under ``path`` (CHAOS layout), or for the single volume at ``path``."""
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refs = discover_cases(path) if path.is_dir() else []
    reports = [_inspect_ref(ref) for ref in refs]
    if not refs:
        report = CaseReport(case=path.name, modality="unknown", source=str(path))
        with warnings.catch_warnings(record=True) as single:
            warnings.simplefilter("always")
            try:
                image = read_any(path)
            except DataError as exc:
                if not path.is_dir():
                    raise
                image = None  # a series that cannot be stacked: say why, as predict would
                report.error = str(exc)
        if image is not None:
            report.modality = image.modality.value
            _report_volume(report, image, None)
        report.warnings = [str(w.message) for w in single]
        reports.append(report)
    if caught and reports:
        reports[0].warnings[:0] = [str(w.message) for w in caught]
    return reports
