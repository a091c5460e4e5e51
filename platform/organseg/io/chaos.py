"""Discovery and loading of datasets in the CHAOS challenge layout.

::

    <root>/Train_Sets/CT/<id>/DICOM_anon/*.dcm              <root>/Train_Sets/CT/<id>/Ground/*.png
    <root>/Train_Sets/MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm   .../T1DUAL/Ground/*.png
    <root>/Train_Sets/MR/<id>/T2SPIR/DICOM_anon/*.dcm       .../T2SPIR/Ground/*.png
    (Test_Sets: the same without Ground)

T1DUAL in- and out-phase are two series of one acquisition and share one mask folder. ``root`` may be the
dataset root, ``Train_Sets``/``Test_Sets``, a ``CT``/``MR`` folder or a single case folder.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from organseg.errors import DataError, DataWarning
from organseg.io._paths import natural_key
from organseg.io.dicom import read_dicom_series
from organseg.io.png import read_mask_series
from organseg.io.volume import Modality, Volume

SPLIT_FOLDERS = {"Train_Sets": "train", "Test_Sets": "test"}
_MR_SERIES = (
    ("T1DUAL-in", Modality.MR_T1_IN, ("T1DUAL", "DICOM_anon", "InPhase"), ("T1DUAL", "Ground")),
    ("T1DUAL-out", Modality.MR_T1_OUT, ("T1DUAL", "DICOM_anon", "OutPhase"), ("T1DUAL", "Ground")),
    ("T2SPIR", Modality.MR_T2SPIR, ("T2SPIR", "DICOM_anon"), ("T2SPIR", "Ground")),
)


@dataclass(frozen=True)
class CaseRef:
    """Where one image series of a CHAOS case lives; cheap to create, loaded by :func:`load_case`.

    ``case_id`` is unique within a dataset (``CT/1``, ``MR/3/T2SPIR``, ``MR/3/T1DUAL-in``; test cases are
    prefixed ``Test/``). ``patient`` groups the series of one person (``CT/1``, ``MR/3``) so train/validation
    splits never put one patient on both sides.
    """

    case_id: str
    patient: str
    modality: Modality
    image_dir: Path
    mask_dir: Path | None
    split: str = "train"


class ChaosCase(NamedTuple):
    """One loaded series: ``case_id, modality, image, label`` (label is None for test cases)."""

    case_id: str
    modality: Modality
    image: Volume
    label: Volume | None


def _is_ct_case(folder: Path) -> bool:
    return (folder / "DICOM_anon").is_dir()


def _is_mr_case(folder: Path) -> bool:
    return (folder / "T1DUAL").is_dir() or (folder / "T2SPIR").is_dir()


def _split_of(folder: Path) -> str:
    for part in reversed(folder.resolve().parts):
        if part in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[part]
    return "train"


def _case_refs(case_dir: Path, kind: str, split: str) -> list[CaseRef]:
    prefix = "Test/" if split == "test" else ""
    patient = f"{prefix}{kind}/{case_dir.name}"
    if kind == "CT":
        ground = case_dir / "Ground"
        return [
            CaseRef(
                case_id=patient,
                patient=patient,
                modality=Modality.CT,
                image_dir=case_dir / "DICOM_anon",
                mask_dir=ground if ground.is_dir() else None,
                split=split,
            )
        ]
    refs = []
    for suffix, modality, image_parts, mask_parts in _MR_SERIES:
        image_dir = case_dir.joinpath(*image_parts)
        if not image_dir.is_dir():
            if case_dir.joinpath(image_parts[0]).is_dir():
                warnings.warn(
                    DataWarning(f"{image_dir}: missing; skipping {modality.value}"), stacklevel=3
                )
            continue
        mask_dir = case_dir.joinpath(*mask_parts)
        refs.append(
            CaseRef(
                case_id=f"{patient}/{suffix}",
                patient=patient,
                modality=modality,
                image_dir=image_dir,
                mask_dir=mask_dir if mask_dir.is_dir() else None,
                split=split,
            )
        )
    return refs


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key
    )


def discover_cases(root: Path | str) -> list[CaseRef]:
    """Every image series under ``root`` in a stable order (split, CT before MR, case number, sequence)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    split = _split_of(root)
    if root.name in ("T1DUAL", "T2SPIR") and _is_mr_case(root.parent):
        # one sequence folder of an MR case (its DICOM_anon does not make it a CT case)
        return [r for r in _case_refs(root.parent, "MR", split) if root in r.image_dir.parents]
    if _is_ct_case(root):
        return _case_refs(root, "CT", split)
    if _is_mr_case(root):
        return _case_refs(root, "MR", split)
    if root.name in ("CT", "MR"):
        refs = []
        for case_dir in _subfolders(root):
            if (root.name == "CT" and _is_ct_case(case_dir)) or (
                root.name == "MR" and _is_mr_case(case_dir)
            ):
                refs += _case_refs(case_dir, root.name, split)
            else:
                warnings.warn(
                    DataWarning(f"{case_dir}: not a CHAOS {root.name} case; skipped"), stacklevel=2
                )
        return refs
    refs = []
    split_dirs = [root / name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    for split_dir in split_dirs or [root]:
        for kind in ("CT", "MR"):
            if (split_dir / kind).is_dir():
                refs += discover_cases(split_dir / kind)
    return refs


def load_case(ref: CaseRef, with_label: bool = True) -> ChaosCase:
    """Read the image series (file-name order) and, when present, its mask on the image's geometry."""
    image = read_dicom_series(ref.image_dir, order="filename")  # pairs with the PNG masks
    declared = ref.modality
    if image.modality not in (declared, Modality.UNKNOWN):
        warnings.warn(
            DataWarning(
                f"{ref.image_dir}: headers suggest {image.modality.value} "
                f"({image.meta.get('modality_reason', '')}) but the CHAOS layout says {declared.value}; "
                "using the layout"
            ),
            stacklevel=2,
        )
    image.modality = declared
    image.meta["case_id"] = ref.case_id
    label = None
    if with_label and ref.mask_dir is not None:
        label = read_mask_series(ref.mask_dir, declared, like=image)
    return ChaosCase(ref.case_id, declared, image, label)


def iter_cases(root: Path | str, with_label: bool = True) -> Iterator[ChaosCase]:
    """Load every case under ``root`` lazily, one series at a time."""
    for ref in discover_cases(root):
        yield load_case(ref, with_label=with_label)
