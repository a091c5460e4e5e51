"""Where each slice of a DICOM series lies, and the order and z step that follow from it.

A series is a stack of 2D images, each placed in the patient by ImagePositionPatient (IPP) and
ImageOrientationPatient (IOP). Its true order is the position along the slice normal (the row direction
crossed with the column direction), never the file names: PACS exports name files by SOP Instance UID.
The z step is measured from the positions, so a missing slice or a duplicate cannot pass as a thinner
step. Only CHAOS dataset folders keep their file-name order (their PNG masks pair with files by name).

The rules (each refusal raises :class:`~organseg.errors.DataError` naming the slices by their place in
the series and their InstanceNumber, never by file name):

* **mixed orientation or size** - refused; a series must share one IOP and one Rows x Columns;
* **duplicate positions** - bit-identical copies are dropped (with a warning); differing images at one
  position (two echoes, two phases in one series) are refused;
* **gaps** - a step that differs from the median step by more than 10 % is refused (a missing slice, or
  a variable-spacing series that a single z step cannot describe);
* **gantry tilt / shifted slices** - slice positions that drift across the slice plane are refused:
  the voxel grid would be sheared, and resampling it is left to the sender.

These functions are pure (positions in, order out); :mod:`organseg.io.dicom` feeds them headers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from organseg.errors import DataError
from organseg.io.volume import Geometry, Volume

#: Positions closer than this along the normal are the same slice position (mm).
DUPLICATE_TOLERANCE_MM = 0.01
#: A step may differ from the median step by this fraction before the series counts as gapped.
GAP_TOLERANCE = 0.10
#: In-plane drift of slice positions (mm) above which the stack counts as tilted or shifted.
SHEAR_TOLERANCE_MM = 0.05
#: IOP cosines may differ by this much between slices and still count as one orientation.
ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class SlicePlacement:
    """One slice as far as ordering is concerned: where it is, how it faces, what it is called.

    ``label`` names the slice in messages (e.g. ``"slice 3 (InstanceNumber 12)"``) and must not carry
    a file name when the series came from an upload.
    """

    position: np.ndarray  # IPP, 3 values (mm)
    orientation: np.ndarray  # IOP, 6 cosines
    rows: int
    columns: int
    label: str


@dataclass(frozen=True)
class SeriesOrder:
    """The order of a series along its normal and the geometry it implies.

    ``order`` indexes the input slices (first = lowest position along the normal); ``dropped`` lists
    input indices left out as bit-identical duplicates (filled in by the caller, who holds the pixels).
    """

    order: list[int]
    normal: np.ndarray
    step_mm: float
    origin: np.ndarray
    row_direction: np.ndarray
    column_direction: np.ndarray
    duplicates: list[tuple[int, int]]  # (kept index, duplicate index) pairs, both input indices

    @property
    def direction(self) -> tuple[float, ...]:
        """Row-major 3x3 (columns: x, y, z index directions), SimpleITK's convention."""
        matrix = np.column_stack([self.row_direction, self.column_direction, self.normal])
        return tuple(float(v) for v in matrix.ravel())


def slice_normal(orientation: np.ndarray, label: str = "the series") -> np.ndarray:
    """Unit normal of an IOP; refuses cosines that are not two orthonormal directions."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(col) - 1) > 1e-3
        or abs(float(row @ col)) > 1e-3
    ):
        raise DataError(
            f"{label}: ImageOrientationPatient {list(np.round(orientation, 6))} is not two "
            "orthogonal unit vectors"
        )
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def check_uniform(slices: Sequence[SlicePlacement]) -> None:
    """Refuse a series whose slices differ in size or orientation, naming the first odd slice."""
    first = slices[0]
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise DataError(
                f"mixed slice sizes: {s.label} is {s.rows}x{s.columns} pixels but {first.label} is "
                f"{first.rows}x{first.columns}; send one series of equal slices"
            )
        if not np.allclose(s.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise DataError(
                f"mixed orientations: ImageOrientationPatient of {s.label} differs from {first.label}; "
                "send one series of parallel slices"
            )


def order_by_position(slices: Sequence[SlicePlacement]) -> SeriesOrder:
    """Order ``slices`` by position along the normal and measure the step; refuse what cannot be stacked.

    Duplicated positions are returned in ``duplicates`` (the caller compares pixels and drops exact
    copies or refuses); gaps, uneven steps and tilted/shifted stacks raise :class:`DataError`.
    """
    if not slices:
        raise DataError("no slices to order")
    check_uniform(slices)
    first = slices[0]
    normal = slice_normal(first.orientation, first.label)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = sorted(range(len(slices)), key=lambda i: (along[i], i))
    duplicates: list[tuple[int, int]] = []
    kept = [order[0]]
    for i in order[1:]:
        if abs(along[i] - along[kept[-1]]) < DUPLICATE_TOLERANCE_MM:
            duplicates.append((kept[-1], i))
        else:
            kept.append(i)
    row, col = first.orientation[:3].astype(float), first.orientation[3:].astype(float)
    base = positions[kept[0]]
    _check_shear(slices, positions, normal, kept)
    step = _check_steps(slices, along, kept)
    return SeriesOrder(
        order=kept,
        normal=normal,
        step_mm=step,
        origin=base,
        row_direction=row,
        column_direction=col,
        duplicates=duplicates,
    )


def _check_shear(
    slices: Sequence[SlicePlacement], positions: np.ndarray, normal: np.ndarray, kept: list[int]
) -> None:
    offsets = positions[kept] - positions[kept[0]]
    in_plane = offsets - np.outer(offsets @ normal, normal)
    drift = np.linalg.norm(in_plane, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > SHEAR_TOLERANCE_MM:
        along = float(offsets[worst] @ normal)
        angle = math.degrees(math.atan2(float(drift[worst]), abs(along))) if along else 90.0
        raise DataError(
            f"slice positions drift across the slice plane: {slices[kept[worst]].label} lies "
            f"{drift[worst]:.3g} mm off the line through {slices[kept[0]].label} along the slice "
            f"normal (gantry tilt of about {angle:.2g} degrees, or a shifted slice); resample the "
            "series to an untilted grid before sending it"
        )


def _check_steps(slices: Sequence[SlicePlacement], along: np.ndarray, kept: list[int]) -> float:
    if len(kept) < 2:
        return 0.0
    steps = np.diff(along[kept])
    median = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - median) > GAP_TOLERANCE * median)
    if bad.size:
        i = int(bad[0])
        a, b = slices[kept[i]], slices[kept[i + 1]]
        missing = steps[i] / median - 1
        what = (
            f"about {round(missing)} slice(s) missing"
            if steps[i] > 1.5 * median
            else "uneven slice spacing"
        )
        raise DataError(
            f"{what}: {steps[i]:.4g} mm between {a.label} and {b.label} where the series steps "
            f"{median:.4g} mm ({bad.size} uneven step(s) in all); send the complete series"
        )
    return float((along[kept[-1]] - along[kept[0]]) / (len(kept) - 1))


def file_order_agrees(slices: Sequence[SlicePlacement]) -> str | None:
    """None when the given (file-name) order runs monotonically along the normal, else why not."""
    if len(slices) < 3:
        return None
    normal = slice_normal(slices[0].orientation, slices[0].label)
    along = np.array([s.position for s in slices], dtype=np.float64) @ normal
    steps = np.diff(along)
    sign = np.sign(np.median(steps))
    wrong = np.flatnonzero(np.sign(steps) != sign)
    if sign == 0 or wrong.size:
        i = int(wrong[0]) if wrong.size else 0
        return (
            f"file-name order disagrees with slice positions ({slices[i].label} at "
            f"{along[i]:.4g} mm, then {slices[i + 1].label} at {along[i + 1]:.4g} mm along the "
            f"normal; {wrong.size} step(s) against the rest)"
        )
    return None


def slice_permutation(a: Geometry, b: Geometry, n: int) -> np.ndarray | None:
    """``perm`` with slice ``perm[k]`` of grid ``a`` lying where slice ``k`` of grid ``b`` lies, when
    the two ``n``-slice grids hold the same slices in another order; else None."""
    ma, mb = a.direction_matrix, b.direction_matrix
    if not (
        np.allclose(a.spacing[:2], b.spacing[:2], rtol=1e-5)
        and np.allclose(ma[:, :2], mb[:, :2], atol=1e-5)
        and np.isclose(a.spacing[2], b.spacing[2], rtol=1e-4)
    ):
        return None
    steps = np.arange(n)[:, None]
    here = np.asarray(a.origin) + steps * a.spacing[2] * ma[:, 2]
    there = np.asarray(b.origin) + steps * b.spacing[2] * mb[:, 2]
    distance = np.linalg.norm(there[:, None, :] - here[None, :, :], axis=2)
    perm = distance.argmin(axis=1)
    if sorted(perm.tolist()) != list(range(n)) or distance.min(axis=1).max() > 0.05 * a.spacing[2]:
        return None
    return perm


def restack_like(volume: Volume, like: Volume) -> Volume:
    """``volume``'s slices put in ``like``'s slice order when both hold the same slices in another order.

    A CHAOS folder is stacked in file-name order locally but by position on the server; the labels that
    come back are restacked onto the local grid so PNG and DICOM-SEG outputs pair with the right files.
    Anything but a pure reordering of the same slices returns ``volume`` unchanged.
    """
    if volume.shape != like.shape or volume.geometry.isclose(like.geometry):
        return volume
    perm = slice_permutation(volume.geometry, like.geometry, volume.shape[0])
    if perm is None:
        return volume
    return dataclasses.replace(
        volume, array=volume.array[perm], geometry=like.geometry, meta=dict(volume.meta)
    )
