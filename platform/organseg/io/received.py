"""A received series as a volume: headers checked, slices ordered by geometry, pixels decoded.

Series from a PACS arrive in any order and their files carry no meaningful names, so slices are stacked
by position along the slice normal (``read_dicom_series(order="geometry")``, never by file name, the
CHAOS convention), and the source headers are matched to the volume's slices by position, the order the
SEG is built in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from organseg.errors import DataError
from organseg.io.dicom import read_dicom_series
from organseg.io.dicomseg import datasets_in_label_order
from organseg.io.naming import series_label
from organseg.io.privacy import phi_values, redact
from organseg.io.volume import Volume

#: Modalities the node segments; any other series is ignored with one log line.
SEGMENTED_MODALITIES = ("CT", "MR")


@dataclass
class ReceivedSeries:
    """A series ready to segment: the volume and its source headers in slice order."""

    volume: Volume
    datasets: list[Dataset]
    label: str  # "series uid:…" for messages


def read_headers(folder: Path) -> list[tuple[Path, Dataset]]:
    """Every instance's header; a file whose header cannot be read names itself by position only."""
    found = []
    for path in sorted(Path(folder).glob("*.dcm")):
        try:
            found.append((path, pydicom.dcmread(path, stop_before_pixels=True)))
        except Exception as exc:  # pydicom raises many types for damaged files
            raise DataError(
                f"instance {len(found) + 1} has an unreadable header ({type(exc).__name__})"
            ) from None
    if not found:
        raise DataError("no instances received")
    return found


def series_phi(folder: Path) -> set[str]:
    """The patient values to keep out of messages about the series in ``folder``, from its first
    readable instance header only (:func:`read_received_series` reads and checks every header)."""
    for path in sorted(Path(folder).glob("*.dcm")):
        try:
            return phi_values([pydicom.dcmread(path, stop_before_pixels=True)])
        except Exception:  # pydicom raises many types for damaged files; the reader names them
            continue
    return set()


def read_received_series(
    folder: Path, label: str | None = None, max_voxels: int | None = None
) -> ReceivedSeries:
    """Headers, geometry order and pixels of the series in ``folder`` (one instance per file).

    Errors never quote header values: anything a library says passes through :func:`redact`, and the
    volume reader runs in its anonymous mode (slices named by InstanceNumber, never by file).
    ``label`` names the series in messages (default: the hash of its SeriesInstanceUID);
    ``max_voxels`` refuses a series whose headers claim more voxels before any pixel is decoded.
    """
    headers = read_headers(folder)
    first = headers[0][1]
    label = label or series_label(uid=str(first.get("SeriesInstanceUID") or ""))
    phi = phi_values([first])
    series = {ds.get("SeriesInstanceUID") for _, ds in headers}
    if len(series) != 1:
        raise DataError(f"{label}: instances of {len(series)} series mixed")
    modality = str(first.get("Modality", ""))
    if modality not in SEGMENTED_MODALITIES:
        raise DataError(f"{label}: modality {modality or 'missing'} is not segmented here (CT, MR)")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in headers):
        raise DataError(
            f"{label}: multi-frame (enhanced) images are not supported; send single-frame"
        )
    try:
        volume = read_dicom_series(
            Path(folder), order="geometry", max_voxels=max_voxels, anonymous=True
        )
    except DataError as exc:  # keeps its type: a RequestTooLarge stays a 413
        raise type(exc)(
            redact(f"{label}: {exc}".replace("the upload", "the series"), phi)
        ) from None
    datasets = datasets_in_label_order([ds for _, ds in headers], volume)
    if datasets is None:
        raise DataError(
            f"{label}: {len(headers)} instances do not map one to one onto the "
            f"{volume.shape[0]} slices (two instances at one position?)"
        )
    volume.meta["source"] = label
    volume.meta.pop("PatientID", None)
    return ReceivedSeries(volume, datasets, label)
