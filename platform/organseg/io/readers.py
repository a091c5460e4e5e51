"""One entry point for "whatever the user pointed at": a volume file, a DICOM folder or a CHAOS case."""

from __future__ import annotations

from pathlib import Path

from organseg.errors import DataError
from organseg.io.chaos import discover_cases, load_case
from organseg.io.dicom import _claims_dicom, read_dicom_series
from organseg.io.files import is_volume_file, read_volume_file
from organseg.io.volume import Modality, Volume


def read_any(path: Path | str, modality: Modality | str | None = None) -> Volume:
    """Read an image from a NIfTI/NRRD/MHA file, a DICOM series folder or a single-series CHAOS case.

    ``modality`` overrides what the file or headers say. A CHAOS MR case holds three series, so it must be
    narrowed with ``modality`` (``MR-T1-in``, ``MR-T1-out``, ``MR-T2SPIR``) or by pointing at the series.
    """
    path = Path(path)
    if path.is_file():
        if not is_volume_file(path):
            if path.suffix.lower() == ".dcm" or _claims_dicom(path):
                raise DataError(
                    f"{path}: one DICOM file; a series is read from its folder: use {path.parent}"
                )
            raise DataError(f"{path}: not a volume file (NIfTI, NRRD, MHA) nor a DICOM folder")
        volume = read_volume_file(path)
    elif path.is_dir():
        refs = discover_cases(path) if _looks_like_chaos(path) else []
        if refs:
            if modality is not None:
                refs = [r for r in refs if r.modality is Modality.parse(modality)]
            if len(refs) != 1:
                found = ", ".join(f"{r.case_id} ({r.modality.value})" for r in discover_cases(path))
                raise DataError(
                    f"{path}: holds several series ({found}); choose one with a modality or point at its "
                    "DICOM folder"
                )
            volume = load_case(refs[0], with_label=False).image
        else:
            volume = read_dicom_series(path)
    else:
        raise DataError(f"{path}: no such file or folder")
    if modality is not None:
        volume.modality = Modality.parse(modality)
    return volume


def _looks_like_chaos(path: Path) -> bool:
    names = {p.name for p in path.iterdir() if p.is_dir()}
    return bool(names & {"DICOM_anon", "T1DUAL", "T2SPIR", "Train_Sets", "Test_Sets", "CT", "MR"})
