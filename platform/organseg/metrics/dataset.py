"""Scoring a whole folder of predictions against a CHAOS dataset: per-case rows, task means, CSV.

Predictions mirror the case ids of :func:`organseg.io.discover_cases` under one root. For case
``CT/1`` the first of these that exists is used: ``CT/1/`` (a PNG series, or one in ``Results/``),
``CT/1.nii.gz`` (or ``.nii``, ``.mha``, ``.mhd``, ``.nrrd``), and the same under the reference's
split folder (``Train_Sets/CT/1`` …). MR T1-DUAL in- and out-phase share one mask; a prediction in
``MR/3/T1DUAL-in`` or ``MR/3/T1DUAL-out`` scores that series, and the CHAOS submission folder
``MR/3/T1DUAL`` scores the in-phase series (the out-phase one is then not expected).

Predictions may be PNG series, volume files or DICOM-SEG objects (``CT/1.dcm``; placed on the
reference series by their references and frame positions) -- every format ``organseg predict`` writes.

CHAOS ranks five tasks; each mean here is over the (case, organ) rows that task covers:
Task 1 liver on CT and MR, Task 2 liver on CT, Task 3 liver on MR, Task 4 CT liver plus the four MR
organs, Task 5 the four MR organs. Tasks 1 and 4 need both modalities. A series without a prediction
counts as the challenge counts it: score 0 (and DICE 0) for each of its organs, in every task mean
that covers it; its distances are unknown (RAVD/ASSD/MSSD means then read infinite). It is listed in
``missing`` and in the CSV (``row=missing``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from organseg.errors import DataError
from organseg.io.chaos import CaseRef, discover_cases
from organseg.io.files import VOLUME_SUFFIXES
from organseg.io.png import grey_to_labels, read_png_series
from organseg.io.volume import Modality
from organseg.metrics.chaos import METRIC_FIELDS, OrganMetrics, evaluate_masks
from organseg.metrics.inputs import (
    MaskSource,
    check_frame,
    check_same_grid,
    dicom_frame,
    load_mask,
    png_series_folder,
)
from organseg.organs import ORGAN_NAMES

#: CHAOS task → (needs CT, needs MR, CT organs, MR organs).
TASKS: dict[str, tuple[bool, bool, tuple[str, ...], tuple[str, ...]]] = {
    "Task 1 (liver, CT+MR)": (True, True, ("liver",), ("liver",)),
    "Task 2 (liver, CT)": (True, False, ("liver",), ()),
    "Task 3 (liver, MR)": (False, True, (), ("liver",)),
    "Task 4 (all organs, CT+MR)": (True, True, ("liver",), ORGAN_NAMES),
    "Task 5 (all organs, MR)": (False, True, (), ORGAN_NAMES),
}
#: Metrics averaged per task (scores are finite; distances may be infinite when a mask is empty).
MEAN_FIELDS: tuple[str, ...] = tuple(
    f for f in METRIC_FIELDS if f not in ("ref_voxels", "pred_voxels", "empty")
)
CSV_COLUMNS: tuple[str, ...] = (
    "row",  # case, missing or mean
    "case_id",
    "modality",
    "organ",
    "n",
    "prediction",
    *MEAN_FIELDS,
)


@dataclass
class CaseResult:
    """One reference series and its prediction's per-organ metrics (empty when none was found)."""

    case_id: str
    modality: Modality
    prediction: Path | None
    organs: dict[str, OrganMetrics] = field(default_factory=dict)


def missing_metrics() -> OrganMetrics:
    """An organ of a series without a prediction: score 0 as the challenge scores it; DICE 0;
    distances infinite like an empty prediction's; volumes unknown."""
    nan, inf = math.nan, math.inf
    return OrganMetrics(
        dice=0.0, ravd=inf, assd=inf, mssd=inf, score=0.0,
        dice_score=0.0, ravd_score=0.0, assd_score=0.0, mssd_score=0.0,
        sensitivity=0.0, specificity=nan, jaccard=0.0, volume_error_ml=nan,
        ref_volume_ml=nan, pred_volume_ml=0.0, ref_voxels=0, pred_voxels=0, empty="missing",
    )  # fmt: skip


@dataclass
class DatasetReport:
    """Every evaluated case, the cases without a prediction, and the CHAOS task means.

    ``missing`` lists case ids; ``missing_cases`` holds their zero-score rows (see the module docs).
    """

    cases: list[CaseResult]
    missing: list[str]
    missing_cases: list[CaseResult] = field(default_factory=list)

    def rows(self, with_missing: bool = True) -> list[tuple[CaseResult, str, OrganMetrics]]:
        """(case, organ, metrics) for every scored series, then every missing one."""
        cases = self.cases + (self.missing_cases if with_missing else [])
        return [(case, organ, m) for case in cases for organ, m in case.organs.items()]

    def task_means(self) -> dict[str, dict[str, float]]:
        """Mean of each metric per CHAOS task, over the task's (case, organ) rows; ``n`` counts them.

        NaN (undefined sensitivity/specificity) is skipped; an infinite distance stays infinite.
        """
        rows = self.rows()
        everything = self.cases + self.missing_cases
        has_ct = any(c.modality is Modality.CT and c.organs for c in everything)
        has_mr = any(c.modality.is_mr and c.organs for c in everything)
        means: dict[str, dict[str, float]] = {}
        for task, (needs_ct, needs_mr, ct_organs, mr_organs) in TASKS.items():
            if (needs_ct and not has_ct) or (needs_mr and not has_mr):
                continue
            chosen = [
                m
                for case, organ, m in rows
                if (case.modality is Modality.CT and organ in ct_organs)
                or (case.modality.is_mr and organ in mr_organs)
            ]
            if chosen:
                means[task] = _mean(chosen)
        return means

    def to_dict(self) -> dict:
        """JSON-safe: ``{"cases": {case: {organ: {...}}}, "tasks": {...}, "missing": [...]}``."""
        return {
            "cases": {
                c.case_id: {organ: m.to_dict() for organ, m in c.organs.items()} for c in self.cases
            },
            "tasks": {
                task: {k: _finite_or_none(v) for k, v in values.items()}
                for task, values in self.task_means().items()
            },
            "missing": list(self.missing),
        }

    def write_csv(self, path: Path | str) -> Path:
        """Per-case rows (``row=case``) then task means (``row=mean``); NaN/inf cells are empty."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for case, organ, m in self.rows():
                values = m.to_dict()
                kind = "missing" if m.empty == "missing" else "case"
                writer.writerow(
                    [kind, case.case_id, case.modality.value, organ, 1, case.prediction or ""]
                    + [_cell(values[f]) for f in MEAN_FIELDS]
                )
            for task, values in self.task_means().items():
                writer.writerow(
                    ["mean", task, "", "", int(values["n"]), ""]
                    + [_cell(values[f]) for f in MEAN_FIELDS]
                )
        return path


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def _mean(metrics: list[OrganMetrics]) -> dict[str, float]:
    out: dict[str, float] = {
        "n": float(len(metrics)),
        "missing": float(sum(m.empty == "missing" for m in metrics)),
    }
    for name in MEAN_FIELDS:
        values = np.array([getattr(m, name) for m in metrics], dtype=np.float64)
        finite_or_inf = values[~np.isnan(values)]
        out[name] = float(finite_or_inf.mean()) if finite_or_inf.size else math.nan
    return out


def _prediction_candidates(root: Path, ref: CaseRef) -> list[Path]:
    case_id = ref.case_id.removeprefix("Test/")
    bases = [root]
    split_folder = "Test_Sets" if ref.split == "test" else "Train_Sets"
    bases.append(root / split_folder)
    names = [case_id]
    if case_id.endswith("/T1DUAL-in"):
        names.append(case_id.removesuffix("-in"))  # the CHAOS submission folder
    return [base / name for base in bases for name in names]


def find_prediction(root: Path, ref: CaseRef) -> Path | None:
    """Where the prediction for ``ref`` lies under ``root`` (see the module docs), or None."""
    for candidate in _prediction_candidates(root, ref):
        if candidate.is_dir() and png_series_folder(candidate) is not None:
            return candidate
        for suffix in (*VOLUME_SUFFIXES, ".dcm"):
            file = candidate.with_name(candidate.name + suffix)
            if file.is_file():
                return file
    return None


def _shared_t1dual_folder(root: Path, ref: CaseRef) -> bool:
    """True when the out-phase series is covered by a CHAOS-style shared ``T1DUAL`` prediction."""
    if not ref.case_id.endswith("/T1DUAL-out"):
        return False
    in_phase = CaseRef(
        ref.case_id.removesuffix("-out") + "-in",
        ref.patient,
        Modality.MR_T1_IN,
        ref.image_dir,
        ref.mask_dir,
        ref.split,
    )
    found = find_prediction(root, in_phase)
    return found is not None and (found.name == "T1DUAL" or found.name.startswith("T1DUAL."))


def evaluate_case(
    ref: CaseRef, prediction: Path, organs: Iterable[str] | None = None
) -> dict[str, OrganMetrics]:
    """Score one prediction against a CHAOS reference series on its DICOM geometry.

    CT cases are scored on liver only (CHAOS CT masks hold nothing else); MR on ``organs``
    (default: all four).
    """
    if ref.mask_dir is None:
        raise DataError(f"{ref.image_dir.parent}: no Ground folder to evaluate against")
    frame = dicom_frame(ref.image_dir)
    grey, files = read_png_series(ref.mask_dir)
    check_frame(grey.shape[0], files, frame)
    reference = MaskSource(values=grey, source=ref.mask_dir, files=files, modality=ref.modality)
    predicted = load_mask(prediction, frame, grey.shape)
    check_same_grid(reference, predicted)
    wanted = list(organs) if organs is not None else list(ORGAN_NAMES)
    if ref.modality is Modality.CT:
        wanted = [o for o in wanted if o == "liver"]
    if not wanted:
        return {}
    return evaluate_masks(
        grey_to_labels(grey, ref.modality, files),
        predicted.labels(ref.modality),
        frame.geometry,
        wanted,
    )


def evaluate_dataset(
    reference_root: Path | str,
    predictions_root: Path | str,
    organs: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> DatasetReport:
    """Score every annotated series under ``reference_root`` whose prediction exists.

    Series without a prediction are listed in ``missing`` and score 0 (a CHAOS-style shared
    ``T1DUAL`` prediction covers the out-phase series by design, so that one is not missing).
    """
    reference_root, predictions_root = Path(reference_root), Path(predictions_root)
    if not predictions_root.is_dir():
        raise DataError(f"{predictions_root}: predictions folder not found")
    refs = [r for r in discover_cases(reference_root) if r.mask_dir is not None]
    if not refs:
        raise DataError(f"{reference_root}: no CHAOS series with a Ground folder found")
    organ_list = list(organs) if organs is not None else None
    cases, missing, missing_cases = [], [], []
    for ref in refs:
        prediction = find_prediction(predictions_root, ref)
        if prediction is None:
            if not _shared_t1dual_folder(predictions_root, ref):
                missing.append(ref.case_id)
                wanted = organ_list if organ_list is not None else list(ORGAN_NAMES)
                if ref.modality is Modality.CT:
                    wanted = [o for o in wanted if o == "liver"]
                missing_cases.append(
                    CaseResult(
                        ref.case_id, ref.modality, None, {o: missing_metrics() for o in wanted}
                    )
                )
            continue
        if progress is not None:
            progress(f"{ref.case_id} ← {prediction}")
        cases.append(
            CaseResult(
                ref.case_id, ref.modality, prediction, evaluate_case(ref, prediction, organ_list)
            )
        )
    if not cases:
        raise DataError(
            f"{predictions_root}: no predictions found for the {len(refs)} series under "
            f"{reference_root} (expected e.g. {_prediction_candidates(predictions_root, refs[0])[0]})"
        )
    return DatasetReport(cases=cases, missing=missing, missing_cases=missing_cases)
