"""`organseg evaluate` for any label set: NIfTI (or other volume file) predictions, or a DICOM-SEG, against
the label maps of an nnU-Net or MSD dataset, per label (:mod:`organseg.metrics.labelwise`).

The label set comes from a dataset's ``dataset.json`` (``--labels``, or the dataset root given as the
reference), its ``label_codes`` included, so a SEG's segments are matched by the codes it was
written with. A prediction is read on the reference's grid and must lie on it (a different grid is an
error naming both files, never resampled silently). In a folder, predictions are named as nnU-Net
writes them, ``{case}{file_ending}``; a case without one is scored as an empty prediction and
listed as missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organseg.errors import DataError
from organseg.io.files import VOLUME_SUFFIXES, is_volume_file, read_volume_file
from organseg.io.volume import Volume
from organseg.labels import LabelSet, parse_msd_labels, parse_nnunet_labels
from organseg.metrics.labelwise import LabelMetrics, evaluate_label_maps, mean_by_label


def read_label_set(path: Path | str) -> LabelSet:
    """The label set of a ``dataset.json`` (nnU-Net v2 or MSD), or of the dataset folder holding one.

    Its ``label_codes`` apply; every problem is one :class:`DataError` naming the file and key.
    """
    from organseg.datasets.base import Problem, join_problems, parse_label_codes

    path = Path(path)
    json_path = path / "dataset.json" if path.is_dir() else path
    if not json_path.is_file():
        raise DataError(
            f"{json_path}: missing; --labels takes a dataset.json or its dataset folder"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise DataError(f"{json_path}: labels: missing (a dataset.json names its labels there)")
    labels = data["labels"]
    name = str(data.get("name", json_path.parent.name))
    msd = isinstance(labels, Mapping) and labels and all(str(k).isdigit() for k in labels)
    problems = (
        parse_msd_labels(labels)[0]
        if msd
        else parse_nnunet_labels(labels, data.get("regions_class_order"))[0]
    )
    if problems:
        raise DataError("; ".join(f"{json_path}: {key}: {message}" for key, message in problems))
    label_set = (
        LabelSet.from_msd(labels, name=name)
        if msd
        else LabelSet.from_nnunet(labels, data.get("regions_class_order"), name=name)
    )
    code_problems: list[Problem] = []
    label_set = parse_label_codes(data.get("label_codes"), label_set, code_problems, json_path)
    if code_problems:
        raise DataError(join_problems(code_problems))
    return label_set


def _label_values(volume: Volume, path: Path) -> np.ndarray:
    """A volume file's voxels as an integer label map (non-integer or non-finite is an error)."""
    array = np.asarray(volume.array)
    integral = array.dtype.kind != "f" or bool(
        np.all(np.isfinite(array)) and np.all(array == np.round(array))
    )
    if not integral:
        raise DataError(f"{path}: non-integer or non-finite voxel values; expected a label map")
    if array.size and array.min() < 0:
        raise DataError(f"{path}: negative voxel values; expected a label map")
    return array.astype(np.uint16 if array.size and array.max() > 255 else np.uint8)


def _seg_on(path: Path, ref: Volume, label_set: LabelSet) -> np.ndarray:
    """A DICOM-SEG's label map on the reference's grid (frames placed by their positions)."""
    from organseg.io.dicomseg import read_dicom_seg

    return read_dicom_seg(path, ref.geometry, tuple(ref.shape), label_set=label_set)  # type: ignore[arg-type]


def read_prediction(path: Path, ref: Volume, ref_path: Path, label_set: LabelSet) -> np.ndarray:
    """The prediction at ``path`` (volume file or DICOM-SEG) as a label map on ``ref``'s grid."""
    from organseg.io.dicomseg import is_dicom_seg

    if path.is_file() and not is_volume_file(path) and is_dicom_seg(path):
        return _seg_on(path, ref, label_set)
    if not is_volume_file(path):
        raise DataError(f"{path}: not a volume file ({', '.join(VOLUME_SUFFIXES)}) nor a DICOM-SEG")
    pred = read_volume_file(path)
    if pred.shape != ref.shape or not pred.geometry.isclose(ref.geometry):
        raise DataError(
            f"{path} lies on another grid than the reference {ref_path} (shape {pred.shape} vs "
            f"{ref.shape}, spacing {pred.geometry.spacing} vs {ref.geometry.spacing}); predictions "
            "must be on the reference's grid"
        )
    return _label_values(pred, path)


def read_label_pair(
    ref_path: Path | str, pred_path: Path | str | None, label_set: LabelSet
) -> tuple[Volume, np.ndarray, np.ndarray]:
    """The reference volume, its label map and the prediction's on its grid (None: all zeros)."""
    ref_path = Path(ref_path)
    if not is_volume_file(ref_path):
        raise DataError(
            f"{ref_path}: the reference must be a label volume ({', '.join(VOLUME_SUFFIXES)})"
        )
    ref = read_volume_file(ref_path)
    ref_labels = _label_values(ref, ref_path)
    if pred_path is None:
        return ref, ref_labels, np.zeros_like(ref_labels)
    return ref, ref_labels, read_prediction(Path(pred_path), ref, ref_path, label_set)


def case_image(ref_path: Path | str) -> Volume | None:
    """The first channel of a reference's case when it lies in an nnU-Net dataset
    (``labelsTr/{case}`` beside ``imagesTr/{case}_0000``), with the modality the dataset gives it
    (:mod:`organseg.datasets.modalities`); None otherwise."""
    from organseg.datasets.base import read_modality_map
    from organseg.datasets.modalities import resolve

    ref_path = Path(ref_path)
    suffix = next((s for s in VOLUME_SUFFIXES if ref_path.name.endswith(s)), None)
    root = ref_path.parent.parent
    if suffix is None or ref_path.parent.name != "labelsTr":
        return None
    image_path = root / "imagesTr" / f"{ref_path.name[: -len(suffix)]}_0000{suffix}"
    if not image_path.is_file():
        return None
    case = ref_path.name[: -len(suffix)]
    try:
        data = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
        names = tuple(str(data["channel_names"][str(i)]) for i in range(len(data["channel_names"])))
        mapping = read_modality_map(data, names, root / "dataset.json", [])
        modality = resolve(names, [case], mapping)[0][case][0]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        modality = None
    image = read_volume_file(image_path)
    return image.with_array(image.array, modality) if modality is not None else image


def evaluate_label_files(
    ref_path: Path | str,
    pred_path: Path | str | None,
    label_set: LabelSet,
    tolerances: Mapping[str, float] | float | None = None,
    only: Collection[str] | None = None,
) -> dict[str, LabelMetrics]:
    """One case: per-label metrics of a prediction (None: missing, scored as empty) vs a reference
    (every label, or those named in ``only``)."""
    ref, ref_labels, pred_labels = read_label_pair(ref_path, pred_path, label_set)
    try:
        return evaluate_label_maps(
            ref_labels, pred_labels, ref.geometry, label_set, tolerances, only
        )
    except DataError as exc:
        raise DataError(f"{pred_path or ref_path} vs {ref_path}: {exc}") from None


@dataclass
class LabelSetReport:
    """Per-case, per-label metrics of a folder of predictions, with the cases that had none."""

    label_set: LabelSet
    cases: dict[str, dict[str, LabelMetrics]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def means(self) -> dict[str, dict[str, float | int | None]]:
        return mean_by_label(self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label_set": self.label_set.name,
            "labels": {lb.name: lb.value for lb in self.label_set},
            "ignore": self.label_set.ignore,
            "metrics": "dice, hd95 (mm), assd (mm), ravd (%), nsd at tolerance_mm (MONAI)",
            "cases": {
                case: {name: m.to_dict() for name, m in per_label.items()}
                for case, per_label in self.cases.items()
            },
            "missing": list(self.missing),
            "mean": self.means(),
        }


def _reference_cases(ref: Path) -> tuple[list[tuple[str, Path]], tuple[str, ...]]:
    """``(case id, label file)`` of a dataset root (via its layout) or a bare labels folder, and the
    file endings to look for predictions with (the dataset's own first)."""
    if (ref / "dataset.json").is_file():
        from organseg.datasets import open_dataset

        dataset = open_dataset(ref)
        cases = [(c.case_id, c.label) for c in dataset.cases if c.label is not None]
        ending = next((s for s in VOLUME_SUFFIXES if cases and cases[0][1].name.endswith(s)), None)
        endings = (
            (ending, *(s for s in VOLUME_SUFFIXES if s != ending)) if ending else VOLUME_SUFFIXES
        )
    else:
        cases = []
        for path in sorted(ref.iterdir()):
            suffix = next((s for s in VOLUME_SUFFIXES if path.name.endswith(s)), None)
            if suffix and not path.name.startswith("."):
                cases.append((path.name[: -len(suffix)], path))
        endings = VOLUME_SUFFIXES
    if not cases:
        raise DataError(f"{ref}: no label maps to score against")
    return cases, endings


def evaluate_label_folder(
    ref: Path | str,
    pred: Path | str,
    label_set: LabelSet,
    tolerances: Mapping[str, float] | float | None = None,
    progress: Callable[[str], None] | None = None,
    only: Collection[str] | None = None,
) -> LabelSetReport:
    """Every case of a dataset (root or labels folder) against ``pred/{case}{file_ending}``."""
    ref, pred = Path(ref), Path(pred)
    if not pred.is_dir():
        raise DataError(f"{pred}: not a folder of predictions")
    cases, endings = _reference_cases(ref)
    report = LabelSetReport(label_set)
    for case_id, label_path in cases:
        found = next(
            (pred / f"{case_id}{e}" for e in endings if (pred / f"{case_id}{e}").is_file()), None
        )
        if found is None:
            report.missing.append(case_id)
        if progress is not None:
            progress(case_id)
        report.cases[case_id] = evaluate_label_files(label_path, found, label_set, tolerances, only)
    return report
