"""DICOM series reading: slices ordered by their position in the patient, or by file name for CHAOS.

:func:`read_dicom_series` is the one entry point. Its ``order`` says how slices are stacked:

* ``"geometry"`` (the default, for every series that is not a CHAOS dataset folder: serving uploads,
  ``organseg predict``, DICOM nodes): by position along the slice normal, z step measured from the
  positions; duplicates, gaps, mixed sizes/orientations and tilted stacks are dropped or refused as
  :mod:`organseg.io.slice_order` documents. Multi-frame (enhanced) CT/MR objects are read frame by frame
  with their per-frame positions.
* ``"filename"`` (CHAOS training and evaluation): file-name order, the challenge's rule that pairs each
  file with its PNG mask. The z step and direction come from the first and last slices' positions, exactly
  as the organizers' evaluator builds its affine, so millimetres agree with theirs.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import SimpleITK as sitk

from organseg.errors import DataError, DataWarning, RequestTooLarge
from organseg.io._paths import listed_files
from organseg.io.modality import infer_modality
from organseg.io.naming import series_label
from organseg.io.slice_order import (
    SlicePlacement,
    check_uniform,
    file_order_agrees,
    order_by_position,
    slice_normal,
)
from organseg.io.volume import Geometry, Modality, Volume

SliceOrder = Literal["geometry", "filename"]
SLICE_ORDERS: tuple[str, ...] = ("geometry", "filename")

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
    "SeriesNumber": "0020|0011",
    "FrameOfReferenceUID": "0020|0052",
    "SliceThickness": "0018|0050",
}
_POSITION, _ORIENTATION, _PIXEL_SPACING = "0020|0032", "0020|0037", "0028|0030"
_ROWS, _COLUMNS = "0028|0010", "0028|0011"
_INSTANCE, _FRAMES = "0020|0013", "0028|0008"


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
    instance: int | None = None  # InstanceNumber (or frame number of a multi-frame object)
    frame: int | None = None  # frame index within a multi-frame object

    def label(self, anonymous: bool = False) -> str:
        """How messages name this slice: its InstanceNumber, plus the file name unless ``anonymous``."""
        name = f"InstanceNumber {self.instance}" if self.instance is not None else "a slice"
        if self.frame is not None:
            name = f"frame {self.frame + 1}"
        return name if anonymous else f"{name} ({self.path.name})"

    def placement(self, anonymous: bool = False) -> SlicePlacement:
        return SlicePlacement(
            self.position, self.orientation, self.rows, self.columns, self.label(anonymous)
        )


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
        instance=_int_or_none(get(_INSTANCE)),
    )


def _int_or_none(text: str) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


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


def _check_series(headers: list[SliceHeader], anonymous: bool = False) -> None:
    """One series of equal, parallel slices (else a DataError naming the odd slice)."""
    first = headers[0]
    series = {h.tags.get("SeriesInstanceUID", "") for h in headers}
    if len(series) > 1:
        where = "the upload" if anonymous else str(first.path.parent)
        raise DataError(
            f"{where}: holds {len(series)} DICOM series (SeriesInstanceUID differs); "
            "put each series in its own folder"
        )
    check_uniform([h.placement(anonymous) for h in headers])


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


def _series_meta(headers: list[SliceHeader], order: str) -> dict[str, str]:
    meta = dict(headers[0].tags)
    meta.update(
        source=str(headers[0].path.parent),
        first_file=headers[0].path.name,
        last_file=headers[-1].path.name,
        slice_count=str(len(headers)),
        slice_order=order,
    )
    instances = [h.instance for h in headers if h.instance is not None]
    if instances:  # names a series in messages without a file name (uploads)
        meta.update(first_instance=str(min(instances)), last_instance=str(max(instances)))
    return meta


def geometry_from_positions(
    headers: list[SliceHeader], anonymous: bool = False
) -> tuple[list[int], Geometry, list[tuple[int, int]]]:
    """Order by position along the normal: (order, geometry, duplicate pairs) - see slice_order."""
    placed = order_by_position([h.placement(anonymous) for h in headers])
    first = headers[placed.order[0]]
    # one slice: its thickness is the only z extent there is
    dz = placed.step_mm if len(placed.order) > 1 else _single_slice_thickness(first)
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], dz)
    geometry = Geometry(spacing=spacing, origin=tuple(placed.origin), direction=placed.direction)
    return placed.order, geometry, placed.duplicates


def _single_slice_thickness(header: SliceHeader) -> float:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(header.tags.get(key) or 0)
        except ValueError:
            value = 0.0
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def file_order_warning(folder: Path) -> str | None:
    """Why a folder's file-name order disagrees with its slice positions, or None (headers only)."""
    headers = list_dicom_files(Path(folder))
    try:
        return file_order_agrees([h.placement() for h in headers])
    except DataError as exc:
        return str(exc)


def read_dicom_geometry(
    folder: Path, order: SliceOrder = "geometry"
) -> tuple[Geometry, Modality, dict[str, str]]:
    """Geometry, modality and key tags of a series, reading headers only (fast)."""
    _check_order(order)
    headers = list_dicom_files(Path(folder))
    _check_series(headers)
    if order == "geometry":
        index, geometry, _ = geometry_from_positions(headers)
        headers = [headers[i] for i in index]
    else:
        geometry = series_geometry(headers)
    meta = _series_meta(headers, order)
    return geometry, infer_modality(meta).modality, meta


def _check_order(order: str) -> None:
    if order not in SLICE_ORDERS:
        raise ValueError(f"order must be one of {SLICE_ORDERS}, got {order!r}")


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


def _read_series(
    paths: list[Path], anonymous: bool = False
) -> tuple[np.ndarray, list[SliceHeader]]:
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
    _check_series(headers, anonymous)  # before stacking: differing slice sizes named
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
    """Name the file that broke a series read: its header, its size, or its pixel data."""
    # raises DataError naming a file whose header is damaged, or a slice of another size
    check_uniform([read_slice_header(path).placement() for path in paths])
    for path in paths:
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


def read_dicom_series(
    folder: Path,
    modality: Modality | str | None = None,
    order: SliceOrder = "geometry",
    max_voxels: int | None = None,
    anonymous: bool = False,
) -> Volume:
    """A DICOM series folder as a Volume in stored units (HU for CT).

    ``order="geometry"`` (default) stacks slices by position along the slice normal and measures the z
    step from the positions (duplicates, gaps, mixed or tilted slices dropped or refused, see
    :mod:`organseg.io.slice_order`); ``order="filename"`` keeps CHAOS file-name order for dataset
    folders. A folder holding one multi-frame (enhanced) object is read with its per-frame positions.
    ``max_voxels`` refuses (:class:`RequestTooLarge`) series whose headers claim more voxels, before any
    pixel is decoded. ``anonymous`` keeps file and folder names out of messages (uploads).
    """
    _check_order(order)
    folder = Path(folder)
    paths = _candidate_files(folder)
    frames = check_pixel_budget(paths, max_voxels, anonymous)
    if frames is not None:  # one multi-frame object
        if len(paths) > 1:
            raise DataError(
                f"{'the upload' if anonymous else folder}: a multi-frame DICOM object among "
                f"{len(paths)} files; send one multi-frame object or a series of single-frame images"
            )
        array, headers = read_multiframe(paths[0], anonymous)
    else:
        _check_sizes(paths, anonymous)
        array, headers = _read_series(paths, anonymous)
        if array.shape[0] != len(headers):
            raise DataError(
                f"{'the upload' if anonymous else folder}: read {array.shape[0]} slices from "
                f"{len(headers)} files"
            )
    _check_series(headers, anonymous)
    if order == "geometry":
        index, geometry, duplicates = geometry_from_positions(headers, anonymous)
        _resolve_duplicates(array, headers, duplicates, anonymous)
        if index != list(range(len(headers))):
            array = array[index]
            headers = [headers[i] for i in index]
    else:
        geometry = series_geometry(headers)
    meta = _series_meta(headers, order)
    if modality is None:
        decision = infer_modality(meta)
        modality = decision.modality
        meta["modality_reason"] = decision.reason
    return Volume(array=array, geometry=geometry, modality=Modality.parse(modality), meta=meta)


def _resolve_duplicates(
    array: np.ndarray,
    headers: list[SliceHeader],
    duplicates: list[tuple[int, int]],
    anonymous: bool,
) -> None:
    """Bit-identical copies at one position are dropped (warned); differing images there are refused."""
    for kept, other in duplicates:
        a, b = headers[kept], headers[other]
        if np.array_equal(array[kept], array[other]):
            warnings.warn(
                DataWarning(
                    f"{b.label(anonymous)} duplicates {a.label(anonymous)} (same position, same "
                    "pixels); dropped"
                ),
                stacklevel=3,
            )
            continue
        echoes = {h.tags.get("EchoTime", "") for h in (a, b)}
        why = (
            f" (EchoTime {' and '.join(sorted(echoes))} ms: two echoes in one series)"
            if len(echoes) > 1
            else ""
        )
        raise DataError(
            f"{a.label(anonymous)} and {b.label(anonymous)} lie at the same position but hold "
            f"different images{why}; send one image per position"
        )


# -- headers-only cost checks and multi-frame objects ---------------------------------------------------

_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def check_pixel_budget(
    paths: list[Path], max_voxels: int | None, anonymous: bool = False
) -> int | None:
    """Refuse, from headers alone, series claiming more voxels than ``max_voxels`` or more pixel bytes
    than their files hold. Returns the frame count when ``paths[0]`` is one multi-frame object, else None.

    Only the first file is parsed when there is no limit (the common local case, kept fast).
    """
    import pydicom

    total = 0
    multiframe = None
    for k, path in enumerate(paths if max_voxels is not None else paths[:1]):
        name = f"file {k + 1}" if anonymous else str(path)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            frames = int(ds.get("NumberOfFrames") or 1)
            bits = int(ds.get("BitsAllocated") or 16)
            samples = int(ds.get("SamplesPerPixel") or 1)
        except Exception:  # pydicom raises many types on damage; GDCM names the problem later
            continue
        if rows <= 0 or columns <= 0 or frames <= 0:
            raise DataError(
                f"{name}: header gives {rows}x{columns} pixels x {frames} frames; the file looks "
                "truncated or corrupt, or holds no image"
            )
        voxels = rows * columns * frames
        total += voxels
        if max_voxels is not None and total > max_voxels:
            raise RequestTooLarge(
                f"the series claims at least {total} voxels ({rows}x{columns} pixels x {frames} "
                f"frame(s) in {name}); the limit is {max_voxels}"
            )
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        needed = voxels * samples * bits // 8
        if syntax in _UNCOMPRESSED and path.stat().st_size < needed:
            raise DataError(
                f"{name}: its header claims {rows}x{columns} pixels x {frames} frame(s) "
                f"({needed} bytes) but the file holds {path.stat().st_size} bytes; truncated"
            )
        if k == 0 and frames > 1:
            multiframe = frames
    return multiframe


def _item(groups: list, keyword: str):
    """First item of a functional-group sequence: per-frame group first, then the shared one."""
    for group in groups:
        if group is not None and keyword in group and len(group[keyword].value):
            return group[keyword][0]
    return None


def read_multiframe(path: Path, anonymous: bool = False) -> tuple[np.ndarray, list[SliceHeader]]:
    """Pixels and per-frame headers of an enhanced (multi-frame) CT/MR object.

    GDCM stacks the frames of such objects without their per-frame positions, so this reads them
    through pydicom's functional groups: each frame's ImagePositionPatient, orientation, pixel spacing
    and rescale.
    """
    import pydicom
    from pydicom.multival import MultiValue

    where = "the multi-frame object" if anonymous else str(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise DataError(f"{where}: not a readable DICOM file ({type(exc).__name__})") from None
    n = int(ds.get("NumberOfFrames") or 1)
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n:
        raise DataError(
            f"{where}: {n} frames but no per-frame positions (PerFrameFunctionalGroupsSequence); "
            "send the series as single-frame images"
        )
    tags = {}
    for keyword in HEADER_TAGS:
        value = ds.get(keyword)
        if value not in (None, ""):
            many = isinstance(value, (list, MultiValue))
            tags[keyword] = "\\".join(map(str, value)) if many else str(value)
    headers = []
    slopes = []
    for i in range(n):
        groups = [per_frame[i], shared]
        position = _item(groups, "PlanePositionSequence")
        orientation = _item(groups, "PlaneOrientationSequence")
        measures = _item(groups, "PixelMeasuresSequence")
        if position is None or orientation is None:
            raise DataError(f"{where}: frame {i + 1} has no plane position or orientation")
        spacing = (
            [float(v) for v in measures.PixelSpacing]
            if measures is not None and "PixelSpacing" in measures
            else [1.0, 1.0]
        )
        frame_tags = dict(tags)
        echo = _item(groups, "MREchoSequence")
        if echo is not None and "EffectiveEchoTime" in echo:
            frame_tags.setdefault("EchoTime", str(echo.EffectiveEchoTime))
        if measures is not None and "SliceThickness" in measures:
            frame_tags.setdefault("SliceThickness", str(measures.SliceThickness))
        transform = _item(groups, "PixelValueTransformationSequence")
        slopes.append(
            (
                float(transform.get("RescaleSlope", 1) or 1) if transform is not None else 1.0,
                float(transform.get("RescaleIntercept", 0) or 0) if transform is not None else 0.0,
            )
        )
        headers.append(
            SliceHeader(
                path=path,
                position=np.array([float(v) for v in position.ImagePositionPatient]),
                orientation=np.array([float(v) for v in orientation.ImageOrientationPatient]),
                pixel_spacing=(spacing[0], spacing[1]),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                tags=frame_tags,
                instance=i + 1,
                frame=i,
            )
        )
    for h in headers:
        if not (np.all(np.isfinite(h.position)) and np.all(np.isfinite(h.orientation))):
            raise DataError(f"{where}: {h.label(anonymous)} has non-finite position or orientation")
        slice_normal(h.orientation, h.label(anonymous))
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise DataError(f"{where}: colour DICOM images are not supported")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DataError(
            f"{where}: pixel data unreadable, truncated or in an unsupported encoding "
            f"({type(exc).__name__})"
        ) from None
    pixels = pixels.reshape(n, int(ds.Rows), int(ds.Columns))
    if any(sl != (1.0, 0.0) for sl in slopes):
        slope = np.array([s for s, _ in slopes], np.float64)[:, None, None]
        intercept = np.array([b for _, b in slopes], np.float64)[:, None, None]
        real = pixels * slope + intercept
        exact = np.all(real == np.round(real))
        pixels = _compact(real.astype(np.int32)) if exact else real.astype(np.float32)
    return np.ascontiguousarray(pixels), headers


def _check_sizes(paths: list[Path], anonymous: bool = False) -> None:
    """Catch truncated files cheaply, before decoding: a file far smaller than its siblings lost data."""
    sizes = np.array([p.stat().st_size for p in paths])
    median = float(np.median(sizes))
    for k, (path, size) in enumerate(zip(paths, sizes, strict=True)):
        if size < 0.5 * median:
            name = f"file {k + 1}" if anonymous else str(path)
            raise DataError(
                f"{name}: {size} bytes where the series' files have about {median:.0f}; "
                "the file looks truncated"
            )


# -- several series in one upload ---------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesGroup:
    """The files of one series (one echo of a multi-echo series) and how messages name it: by
    SeriesNumber and InstanceNumbers, never by a file name."""

    paths: list[Path]
    label: str


def echo_time_key(value: object) -> str:
    """EchoTime as the key that splits a dual-echo series stored under one UID: its first value in ms
    as text (``"4.6"``), the raw text when that is not a number, ``""`` when absent or empty."""
    text = "" if value is None else str(value)
    try:
        return f"{float(text.split(chr(92))[0]):g}"
    except ValueError:
        return text


T = TypeVar("T")


def split_series(entries: list[tuple[str, Any, T]]) -> list[tuple[str, bool, list[tuple[Any, T]]]]:
    """The one grouping rule for DICOM instances, for uploads and STOW-RS bodies alike: ``entries``
    are (SeriesInstanceUID, header, item) in arrival order; they are grouped by UID, then by EchoTime
    within a UID (a dual-echo acquisition stored as one series reads as one series per echo). Each
    group is (its EchoTime key, whether its UID was split by echo, its (header, item) pairs), in order
    of first arrival."""
    by_uid: dict[str, dict[str, list[tuple[Any, T]]]] = {}
    for uid, ds, item in entries:
        echoes = by_uid.setdefault(uid, {})
        echoes.setdefault(echo_time_key(ds.get("EchoTime")), []).append((ds, item))
    return [
        (echo, len(echoes) > 1, members)
        for echoes in by_uid.values()
        for echo, members in echoes.items()
    ]


def read_headers(
    paths: Iterable[Path], keywords: Sequence[str]
) -> tuple[list[tuple[str, Any, Path]], list[Path]]:
    """The headers of ``paths`` (pydicom, ``keywords`` only, no pixels), ready for
    :func:`split_series`: (SeriesInstanceUID, header, path) for each DICOM file that has one, in the
    order given, and the files that claim to be DICOM but cannot be placed (header unreadable, or no
    SeriesInstanceUID). Files that are not DICOM are skipped, as the series reader skips them."""
    import pydicom

    entries: list[tuple[str, Any, Path]] = []
    unplaced: list[Path] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, force=True, specific_tags=list(keywords)
            )
            uid = str(ds.get("SeriesInstanceUID") or "")
        except Exception:  # pydicom raises many types on non-DICOM bytes
            uid = ""
        if uid:
            entries.append((uid, ds, path))
        elif _claims_dicom(path):  # damaged, or no UID
            unplaced.append(path)
    return entries, unplaced


def group_series(paths: list[Path]) -> list[SeriesGroup]:
    """``paths`` grouped by SeriesInstanceUID, headers only (pydicom, no pixels).

    A dual-echo acquisition stored as one series (T1 in- and out-of-phase under one UID) is split by
    EchoTime, so each echo reads as its own series. Files that are not DICOM are skipped, as the series
    reader skips them; a DICOM object without a SeriesInstanceUID cannot be placed and is refused.
    Groups come in SeriesNumber order.
    """
    import pydicom

    entries, unplaced = read_headers(
        paths, ["SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "EchoTime"]
    )
    uids = {uid for uid, _, _ in entries}
    if unplaced and len(uids) == 1:
        (uid,) = uids
        entries.extend((uid, pydicom.Dataset(), p) for p in unplaced)
    elif unplaced:
        raise DataError(
            f"{unplaced[0].name}: its DICOM header is unreadable (truncated or corrupt) or has no "
            "SeriesInstanceUID, so it cannot be assigned to one of the series"
        )
    if not entries:
        raise DataError("the upload holds no DICOM files")
    groups: list[tuple[tuple[int, int], SeriesGroup]] = []
    for echo, split, files in split_series(entries):
        number = _int_or_none(str(files[0][0].get("SeriesNumber", "") or ""))
        instances = [
            n
            for ds, _ in files
            if (n := _int_or_none(str(ds.get("InstanceNumber", "") or ""))) is not None
        ]
        label = series_label(
            number=number,
            first=min(instances, default=None),
            last=max(instances, default=None),
            unnumbered="a series without number",
            echo=echo if split else None,
        )
        key = (number if number is not None else 1 << 30, min(instances, default=0))
        groups.append((key, SeriesGroup([p for _, p in files], label)))
    return [g for _, g in sorted(groups, key=lambda item: item[0])]
