"""A received series as a volume: headers checked, slices ordered by geometry, pixels decoded.

Series from a PACS arrive in any order and their files carry no meaningful names, so slices are stacked
by position along the slice normal (never by file name, the CHAOS convention). The SEG is later built
from the headers in exactly the order of the volume's slices.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from organseg.errors import DataError
from organseg.io.dicom import read_dicom_series
from organseg.io.volume import Volume
from organseg.pacs.privacy import phi_values, redact, short_uid

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


def geometry_order(headers: list[tuple[Path, Dataset]], label: str) -> list[tuple[Path, Dataset]]:
    """The instances sorted by ImagePositionPatient along the slice normal, checked for one stack."""
    positions, normals = [], []
    for index, (_, ds) in enumerate(headers, start=1):
        try:
            orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
            position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
        except (AttributeError, TypeError, ValueError):
            raise DataError(
                f"{label}: instance {short_uid(ds.get('SOPInstanceUID'))} lacks a valid "
                "ImagePositionPatient/ImageOrientationPatient; slices cannot be placed"
            ) from None
        if orientation.size != 6 or position.size != 3:
            raise DataError(f"{label}: instance {index} has malformed position/orientation")
        normals.append(np.cross(orientation[:3], orientation[3:]))
        positions.append(position)
    normal = normals[0]
    if any(np.abs(n - normal).max() > 1e-3 for n in normals[1:]):
        raise DataError(f"{label}: slices have different orientations; not one stack")
    along = np.asarray(positions) @ normal
    order = np.argsort(along, kind="stable")
    if len(order) > 1 and np.min(np.diff(along[order])) < 1e-3:
        raise DataError(f"{label}: two instances share one slice position; not one stack")
    return [headers[i] for i in order]


def read_received_series(folder: Path) -> ReceivedSeries:
    """Headers, geometry order and pixels of the series in ``folder`` (one instance per file).

    Errors never quote header values: anything a library says passes through :func:`redact`.
    """
    headers = read_headers(folder)
    first = headers[0][1]
    label = f"series {short_uid(first.get('SeriesInstanceUID'))}"
    phi = phi_values([first])
    series = {ds.get("SeriesInstanceUID") for _, ds in headers}
    if len(series) != 1:
        raise DataError(f"{label}: instances of {len(series)} series mixed")
    modality = str(first.get("Modality", ""))
    if modality not in SEGMENTED_MODALITIES:
        raise DataError(f"{label}: modality {modality or 'missing'} is not segmented here (CT, MR)")
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(
            f"{label}: multi-frame (enhanced) images are not supported; send single-frame"
        )
    ordered = geometry_order(headers, label)
    with tempfile.TemporaryDirectory(prefix="organseg-series-") as tmp:
        # the volume reader stacks in file-name order: name hard links by geometric rank
        for rank, (path, _) in enumerate(ordered):
            link = Path(tmp) / f"{rank:05d}.dcm"
            try:
                os.link(path, link)
            except OSError:
                link.symlink_to(path.resolve())
        try:
            volume = read_dicom_series(Path(tmp))
        except DataError as exc:
            message = re.sub(
                re.escape(tmp) + r"/(\d+)\.dcm",
                lambda m: f"{label}, slice {int(m[1]) + 1} of {len(ordered)} (by position)",
                str(exc),
            ).replace(tmp, label)
            raise DataError(redact(message, phi)) from None
    volume.meta["source"] = label
    volume.meta.pop("PatientID", None)
    return ReceivedSeries(volume, [ds for _, ds in ordered], label)
