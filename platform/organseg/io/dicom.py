"""DICOM series reading with the CHAOS slice-order rule.

Slices are stacked in **file-name order** (the challenge's rule), never re-sorted by position. The z step
and direction still come from the first and last slices' ImagePositionPatient, exactly as the organizers'
evaluator builds its affine, so millimetres agree with theirs even when file order runs feet-to-head or
head-to-feet.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from organseg.errors import DataError, DataWarning
from organseg.io._paths import listed_files
from organseg.io.modality import infer_modality
from organseg.io.volume import Geometry, Modality, Volume

#: DICOM keywords kept in ``Volume.meta`` (routing, reports, DICOM-SEG export).
HEADER_TAGS: dict[str, str] = {
    "Modality": "0008|0060",
    "SeriesDescription": "0008|103e",
    "ProtocolName": "0018|1030",
    "SequenceName": "0018|0024",
    "ScanningSequence": "0018|0020",
    "EchoTime": "0018|0081",
    "RepetitionTime": "0018|0080",
    "MagneticFieldStrength": "0018|0087",
    "Manufacturer": "0008|0070",
    "PatientID": "0010|0020",
    "StudyInstanceUID": "0020|000d",
    "SeriesInstanceUID": "0020|000e",
    "FrameOfReferenceUID": "0020|0052",
    "SliceThickness": "0018|0050",
}
_POSITION, _ORIENTATION, _PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"
_ROWS, _COLUMNS = "0028|0010", "0028|0011"


@dataclass(frozen=True)
class SliceHeader:
    """What the series reader needs from one file's header."""

    path: Path
    position: np.ndarray  # ImagePositionPatient (mm)
    orientation: np.ndarray  # ImageOrientationPatient, 6 cosines
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) as DICOM stores it
    rows: int
    columns: int
    tags: dict[str, str]


def _numbers(text: str, count: int, path: Path, name: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.strip().split("\\")], dtype=np.float64)
    except ValueError:
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise DataError(f"{path}: {name} is {text.strip()!r}, expected {count} numbers")
    return values


def read_slice_header(path: Path) -> SliceHeader:
    """Header of one DICOM file (no pixels). Raises DataError naming the file when it is not DICOM."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable DICOM file ({_first_line(exc)})") from None
    keys = set(reader.GetMetaDataKeys())
    size = reader.GetSize()
    return _parse_header(
        path, lambda tag: reader.GetMetaData(tag).strip() if tag in keys else "", size
    )


def _parse_header(path: Path, get: Callable[[str], str], size: tuple[int, ...]) -> SliceHeader:
    """A SliceHeader from a tag getter (one file's reader, or one slice of a series reader)."""
    for tag, name in (
        (_POSITION, "ImagePositionPatient"),
        (_ORIENTATION, "ImageOrientationPatient"),
    ):
        if not get(tag):
            raise DataError(f"{path}: missing {name}; cannot place the slice in space")
    spacing_text = get(_PIXEL_SPACING)
    spacing = (
        _numbers(spacing_text, 2, path, "PixelSpacing") if spacing_text else np.array([1.0, 1.0])
    )
    if np.any(spacing <= 0):
        raise DataError(f"{path}: PixelSpacing {spacing_text!r} must be positive")
    return SliceHeader(
        path=path,
        position=_numbers(get(_POSITION), 3, path, "ImagePositionPatient"),
        orientation=_numbers(get(_ORIENTATION), 6, path, "ImageOrientationPatient"),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(get(_ROWS) or size[1]),
        columns=int(get(_COLUMNS) or size[0]),
        tags={name: value for name, tag in HEADER_TAGS.items() if (value := get(tag))},
    )


def _claims_dicom(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble marker ("DICM" at byte 128)."""
    with path.open("rb") as stream:
        stream.seek(128)
        return stream.read(4) == b"DICM"


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a file:line location; the useful sentence is usually the last line.
    return lines[-1] if lines else type(exc).__name__


def list_dicom_files(folder: Path) -> list[SliceHeader]:
    """Headers of the DICOM files in ``folder`` in file-name order.

    Files that are not DICOM at all (a stray ``notes.txt``, ``.DS_Store``, ``DICOMDIR``) are skipped with a
    :class:`DataWarning` naming them; an empty folder or one without any DICOM is a :class:`DataError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    headers: list[SliceHeader] = []
    for path in listed_files(folder):
        if path.name.upper() == "DICOMDIR":
            continue
        try:
            headers.append(read_slice_header(path))
        except DataError as exc:
            if _claims_dicom(path):  # a DICOM file we cannot read is damage, not a stray file
                raise DataError(f"{exc}; the file looks truncated or corrupt") from None
            warnings.warn(DataWarning(f"skipped {exc}"), stacklevel=2)
    if not headers:
        raise DataError(f"{folder}: no DICOM files found")
    return headers


def _check_series(headers: list[SliceHeader]) -> None:
    first = headers[0]
    series = {h.tags.get("SeriesInstanceUID", "") for h in headers}
    if len(series) > 1:
        raise DataError(
            f"{first.path.parent}: holds {len(series)} DICOM series (SeriesInstanceUID differs); "
            "put each series in its own folder"
        )
    for h in headers[1:]:
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise DataError(
                f"{h.path}: {h.rows}x{h.columns} pixels, but {first.path.name} has "
                f"{first.rows}x{first.columns}"
            )
        if not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise DataError(f"{h.path}: ImageOrientationPatient differs from {first.path.name}")


def series_geometry(headers: list[SliceHeader]) -> Geometry:
    """Geometry of a series stacked in the given order, from its first and last slices.

    Mirrors the CHAOS evaluator: origin at the first file's position, the z axis from the first to the
    last position divided by (n - 1). Uneven steps (a missing slice) raise a DataWarning naming the gap.
    """
    first, last = headers[0], headers[-1]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    n = len(headers)
    if n > 1:
        step = (last.position - first.position) / (n - 1)
        dz = float(np.linalg.norm(step))
        if dz < 1e-6:
            raise DataError(f"{first.path.parent}: first and last slices share one position")
        z_dir = step / dz
        positions = np.array([h.position for h in headers])
        gaps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        # Compare with the median step: a missing slice stretches the average step, which would
        # make every step look uneven and blame the first pair instead of the gap.
        usual = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - usual) > max(0.05 * usual, 1e-3))
        if bad.size:
            i = int(bad[0])
            warnings.warn(
                DataWarning(
                    f"{first.path.parent}: uneven slice spacing ({gaps[i]:.3g} mm between "
                    f"{headers[i].path.name} and {headers[i + 1].path.name}, {usual:.3g} mm "
                    "elsewhere); a slice may be missing"
                ),
                stacklevel=2,
            )
    else:
        dz = float(first.tags.get("SliceThickness") or 1.0) or 1.0
        z_dir = np.cross(row_dir, col_dir)
    direction = np.column_stack([row_dir, col_dir, z_dir])
    # PixelSpacing is (between rows, between columns) = (y, x).
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], dz)
    return Geometry(
        spacing=spacing, origin=tuple(first.position), direction=tuple(direction.ravel())
    )


def _series_meta(headers: list[SliceHeader]) -> dict[str, str]:
    meta = dict(headers[0].tags)
    meta.update(
        source=str(headers[0].path.parent),
        first_file=headers[0].path.name,
        last_file=headers[-1].path.name,
        slice_count=str(len(headers)),
    )
    return meta


def read_dicom_geometry(folder: Path) -> tuple[Geometry, Modality, dict[str, str]]:
    """Geometry, modality and key tags of a series, reading headers only (fast)."""
    headers = list_dicom_files(Path(folder))
    _check_series(headers)
    meta = _series_meta(headers)
    return series_geometry(headers), infer_modality(meta).modality, meta


def _candidate_files(folder: Path) -> list[Path]:
    """Files to read as the series: Part-10 DICOM by its marker (cheap), others only if a header parses."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    paths = []
    for path in listed_files(folder):
        if path.name.upper() == "DICOMDIR":
            continue
        if _claims_dicom(path):
            paths.append(path)
            continue
        try:  # DICOM without the preamble exists in the wild
            read_slice_header(path)
            paths.append(path)
        except DataError as exc:
            warnings.warn(DataWarning(f"skipped {exc}"), stacklevel=3)
    if not paths:
        raise DataError(f"{folder}: no DICOM files found")
    return paths


def _read_series(paths: list[Path]) -> tuple[np.ndarray, list[SliceHeader]]:
    """Pixels and per-slice headers in one pass over the files (GDCM parses each file once).

    The files are read as a few contiguous runs in parallel threads (GDCM releases the GIL), which is
    what puts this reader ahead of a plain per-file pydicom loop.
    """
    pixel_type = _exact_pixel_type(paths[0])
    runs = _runs(paths)
    results = _execute_runs(runs, pixel_type)
    if pixel_type is not None and not _uniform_rescale([reader for _, reader in results]):
        results = _execute_runs(runs, None)  # per-slice rescaling: let GDCM choose a wide type
    headers: list[SliceHeader] = []
    views = []
    for run, (image, reader) in zip(runs, results, strict=True):
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(f"{paths[0].parent}: colour DICOM images are not supported")
        size = image.GetSize()[:2]
        for index, path in enumerate(run):
            keys = set(reader.GetMetaDataKeys(index))

            def get(
                tag: str, i: int = index, k: set[str] = keys, r: sitk.ImageSeriesReader = reader
            ) -> str:
                return r.GetMetaData(i, tag).strip() if tag in k else ""

            headers.append(_parse_header(path, get, size))
        del reader  # the image stops sharing its buffer with the pipeline: viewing it needs no copy
        views.append(sitk.GetArrayViewFromImage(image))
    _check_series(headers)  # before stacking: differing slice sizes get a message naming the file
    stacked = views[0].copy() if len(views) == 1 else np.concatenate(views)
    return _compact(stacked), headers


def _runs(paths: list[Path], min_files: int = 16) -> list[list[Path]]:
    workers = max(1, min(4, os.cpu_count() or 1, len(paths) // min_files))
    bounds = np.linspace(0, len(paths), workers + 1).astype(int)
    return [paths[a:b] for a, b in itertools.pairwise(bounds)]


def _execute_runs(
    runs: list[list[Path]], pixel_type: int | None
) -> list[tuple[sitk.Image, sitk.ImageSeriesReader]]:
    if len(runs) == 1:
        return [_execute_series(runs[0], pixel_type)]
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda run: _execute_series(run, pixel_type), runs))


_RESCALE = ("0028|1053", "0028|1052")  # RescaleSlope, RescaleIntercept


def _exact_pixel_type(first: Path) -> int | None:
    """int16/uint16 when stored bits and rescale fit exactly (GDCM would otherwise widen CT to int32)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(first))
    try:
        reader.ReadImageInformation()
        tags = {k: reader.GetMetaData(k).strip() for k in reader.GetMetaDataKeys()}
        slope, intercept = float(tags.get(_RESCALE[0]) or 1), float(tags.get(_RESCALE[1]) or 0)
        bits, signed = int(tags.get("0028|0101") or 16), (tags.get("0028|0103") or "0") == "1"
    except (RuntimeError, ValueError):
        return None
    if slope != int(slope) or intercept != int(intercept) or not 1 <= bits <= 16:
        return None
    stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    lo, hi = sorted(v * slope + intercept for v in stored)
    if lo >= -(2**15) and hi < 2**15:
        return sitk.sitkInt16
    if lo >= 0 and hi < 2**16:
        return sitk.sitkUInt16
    return None


def _uniform_rescale(readers: list[sitk.ImageSeriesReader]) -> bool:
    """Every slice shares the first slice's RescaleSlope/Intercept (so the exact pixel type holds)."""

    def rescale(reader: sitk.ImageSeriesReader, i: int) -> tuple[str, ...]:
        keys = set(reader.GetMetaDataKeys(i))
        return tuple(reader.GetMetaData(i, k).strip() if k in keys else "" for k in _RESCALE)

    first = rescale(readers[0], 0)
    return all(
        rescale(reader, i) == first for reader in readers for i in range(len(reader.GetFileNames()))
    )


def _execute_series(
    paths: list[Path], pixel_type: int | None
) -> tuple[sitk.Image, sitk.ImageSeriesReader]:
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(p) for p in paths])
    reader.MetaDataDictionaryArrayUpdateOn()
    if pixel_type is not None:
        reader.SetOutputPixelType(pixel_type)
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    # Geometry is ours (file-name order); silence ITK's non-uniform sampling chatter meanwhile.
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = reader.Execute()
    except RuntimeError:
        _raise_for_culprit(paths)
        raise
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)
    return image, reader


def _raise_for_culprit(paths: list[Path]) -> None:
    """Name the file that broke a series read: its header, or its pixel data."""
    for path in paths:
        read_slice_header(path)  # raises DataError naming a file whose header is damaged
        try:
            sitk.ReadImage(str(path), imageIO="GDCMImageIO")
        except RuntimeError as exc:
            raise DataError(
                f"{path}: pixel data unreadable, file truncated or corrupt ({_first_line(exc)})"
            ) from None


def _compact(array: np.ndarray) -> np.ndarray:
    """int16 when integer values fit (halves memory against a widened int32); else the array as is."""
    if array.dtype.kind in "iu" and array.dtype.itemsize > 2 and array.size:
        lo, hi = array.min(), array.max()
        if np.iinfo(np.int16).min <= lo and hi <= np.iinfo(np.int16).max:
            return array.astype(np.int16)
    return array


def read_dicom_series(folder: Path, modality: Modality | str | None = None) -> Volume:
    """A DICOM series folder as a Volume in CHAOS file-name order, in stored units (HU for CT)."""
    folder = Path(folder)
    paths = _candidate_files(folder)
    _check_sizes(paths)
    array, headers = _read_series(paths)
    _check_series(headers)
    meta = _series_meta(headers)
    geometry = series_geometry(headers)
    if array.shape[0] != len(headers):
        raise DataError(f"{folder}: read {array.shape[0]} slices from {len(headers)} files")
    if modality is None:
        decision = infer_modality(meta)
        modality = decision.modality
        meta["modality_reason"] = decision.reason
    return Volume(array=array, geometry=geometry, modality=Modality.parse(modality), meta=meta)


def _check_sizes(paths: list[Path]) -> None:
    """Catch truncated files cheaply, before decoding: a file far smaller than its siblings lost data."""
    sizes = np.array([p.stat().st_size for p in paths])
    median = float(np.median(sizes))
    for path, size in zip(paths, sizes, strict=True):
        if size < 0.5 * median:
            raise DataError(
                f"{path}: {size} bytes where the series' files have about {median:.0f}; "
                "the file looks truncated"
            )
