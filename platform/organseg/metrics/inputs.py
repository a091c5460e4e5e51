"""Turning what a user points ``organseg evaluate`` at into label maps on one millimetre grid.

A mask source is a CHAOS PNG series folder (or a submission folder holding ``Results/``), a CHAOS
case folder (``Ground`` beside ``DICOM_anon``), a volume file (NIfTI, NRRD, MHA), or a DICOM-SEG
(placed on the reference DICOM series' grid by its references and frame positions). Grey levels
become organ ids by the data layer's CHAOS rules: CT — every non-zero voxel is liver, as the
organizers' evaluator reads it; MR — the CHAOS grey ranges. The modality, in order of precedence,
comes from an explicit choice, the ``--dicom`` header, a CHAOS case folder, or a volume file's own
note; failing all of these a binary mask is liver (several grey levels get the MR ranges).

Millimetres come from the ``--dicom`` series (the organizers' affine: first and last slice
positions, PixelSpacing, orientation, file-name order), else from a case folder's DICOM series, else
from a volume file's header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from organseg.errors import DataError
from organseg.io.dicom import read_dicom_geometry
from organseg.io.dicomseg import is_dicom_seg, read_dicom_seg
from organseg.io.files import is_volume_file, read_volume_file
from organseg.io.png import grey_to_labels, read_png_series
from organseg.io.slice_order import slice_permutation
from organseg.io.volume import Geometry, Modality
from organseg.organs import ORGAN_LABELS

_MAX_LABEL = max(ORGAN_LABELS.values())
#: Sequence folder names of a CHAOS MR case and the modality their masks belong to (the MR grey
#: ranges are the same for every sequence, so in-phase stands for T1DUAL).
_MR_SEQUENCE_FOLDERS = {"T1DUAL": Modality.MR_T1_IN, "T2SPIR": Modality.MR_T2SPIR}


@dataclass(frozen=True)
class ReferenceFrame:
    """Geometry and modality taken from a DICOM series, with where they came from."""

    geometry: Geometry
    modality: Modality
    source: Path
    slice_count: int
    series_uid: str = ""
    frame_of_reference_uid: str = ""


@dataclass
class MaskSource:
    """A mask as stored (grey levels or label ids), with what is known about its grid and files."""

    values: np.ndarray  # uint8 [z, y, x]: CHAOS grey levels, or label ids / grey in a volume file
    source: Path
    files: list[Path] = field(default_factory=list)  # per-slice files, or the one volume file
    geometry: Geometry | None = None
    geometry_source: str | None = None
    modality: Modality = Modality.UNKNOWN  # what the source itself implies
    is_volume_file: bool = False  # values are organ ids or grey levels of one file (not PNGs)
    frame: ReferenceFrame | None = None  # the DICOM series a CHAOS case folder carries

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def describe(self) -> str:
        """The source for messages: the folder and its first/last file when there are several."""
        if len(self.files) > 1:
            return f"{self.source} ({self.files[0].name} … {self.files[-1].name})"
        return str(self.source)

    def labels(self, modality: Modality) -> np.ndarray:
        """Organ ids (uint8) under ``modality``'s grey-level rules."""
        if self.is_volume_file:
            return _volume_labels(self.values, modality, self.source)
        return grey_to_labels(self.values, modality, self.files)


@dataclass(frozen=True)
class EvaluationInput:
    """Reference and prediction as organ ids on one grid, and where grid and modality came from."""

    ref_labels: np.ndarray
    pred_labels: np.ndarray
    geometry: Geometry
    modality: Modality
    geometry_source: str
    ref: MaskSource
    pred: MaskSource


def dicom_frame(folder: Path | str) -> ReferenceFrame:
    """Geometry and modality of a DICOM series (or a CHAOS case's) from its headers alone.

    An MR header whose sequence is not recognised still means MR grey ranges for the masks.
    """
    folder = dicom_series_folder(Path(folder))
    geometry, modality, meta = read_dicom_geometry(folder, order="filename")  # CHAOS scoring
    if modality is Modality.UNKNOWN and meta.get("Modality", "").upper() == "MR":
        modality = Modality.MR_T2SPIR
    return ReferenceFrame(
        geometry,
        modality,
        folder,
        int(meta.get("slice_count", 0)),
        meta.get("SeriesInstanceUID", ""),
        meta.get("FrameOfReferenceUID", ""),
    )


def png_series_folder(folder: Path) -> Path | None:
    """The PNG series folder ``folder`` stands for: itself, or its CHAOS ``Results``/``Ground``."""
    for candidate in (folder, folder / "Results", folder / "Ground"):
        if candidate.is_dir() and any(
            p.suffix.lower() == ".png" and not p.name.startswith(".") for p in candidate.iterdir()
        ):
            return candidate
    return None


def dicom_series_folder(folder: Path) -> Path:
    """The DICOM series a folder stands for: itself, its case's ``DICOM_anon``, or for T1-DUAL the
    in-phase series (in- and out-phase share one grid and one mask)."""
    if (folder / "DICOM_anon").is_dir():
        folder = folder / "DICOM_anon"
    if (folder / "InPhase").is_dir():
        folder = folder / "InPhase"
    return folder


def _case_modality(case_dir: Path, frame: ReferenceFrame | None) -> Modality:
    """A CHAOS case's modality from its place in the layout, else from its DICOM header."""
    if case_dir.name in _MR_SEQUENCE_FOLDERS:
        return _MR_SEQUENCE_FOLDERS[case_dir.name]
    if case_dir.parent.name == "CT":
        return Modality.CT
    return frame.modality if frame is not None else Modality.UNKNOWN


def _volume_values(array: np.ndarray, path: Path) -> np.ndarray:
    """A volume file's voxels as uint8, refusing what cannot be a label map or grey mask."""
    integral = array.dtype.kind != "f" or bool(np.all(array == np.round(array)))
    if not integral:  # NaN fails the comparison too
        raise DataError(f"{path}: non-integer voxel values; expected a label map")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(
            f"{path}: voxel values {array.min():g}..{array.max():g}; expected organ ids "
            f"0-{_MAX_LABEL} or CHAOS grey levels 0-255"
        )
    return array.astype(np.uint8)


def _volume_labels(array: np.ndarray, modality: Modality, path: Path) -> np.ndarray:
    """Organ ids from a volume file holding organseg label ids (0–4) or CHAOS grey levels."""
    if modality is Modality.CT:
        return (array != 0).astype(np.uint8)
    if array.max(initial=0) <= _MAX_LABEL:  # organseg label ids already (binary 0/1 is liver)
        return array
    return grey_to_labels(array, modality, [path] * array.shape[0])


def load_mask(
    path: Path | str,
    frame: ReferenceFrame | None = None,
    shape: tuple[int, ...] | None = None,
) -> MaskSource:
    """Read one mask source as stored; organ ids follow once the modality is settled.

    A DICOM-SEG needs ``frame`` (the reference DICOM series) and ``shape`` (the reference grid).
    """
    path = Path(path)
    if path.is_file():
        if is_volume_file(path):
            volume = read_volume_file(path)
            return MaskSource(
                values=_volume_values(volume.array, path),
                source=path,
                files=[path],
                geometry=volume.geometry,
                geometry_source=str(path),
                modality=volume.modality,
                is_volume_file=True,
            )
        if is_dicom_seg(path):
            return _load_seg(path, frame, shape)
        raise DataError(
            f"{path}: not a volume file (NIfTI, NRRD, MHA), a DICOM-SEG nor a PNG mask series folder"
        )
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")

    png_dir = png_series_folder(path)
    if png_dir is None:
        raise DataError(
            f"{path}: no PNG mask series here (nor in Results/ or Ground/); expected a CHAOS mask "
            "folder, a CHAOS case folder or a volume file"
        )
    # A CHAOS case (``Ground`` beside ``DICOM_anon``) carries its own geometry and modality.
    frame = None
    modality = Modality.UNKNOWN
    if png_dir.name == "Ground":
        case_dir = png_dir.parent
        if (case_dir / "DICOM_anon").is_dir():
            frame = dicom_frame(case_dir)
        modality = _case_modality(case_dir, frame)
    grey, files = read_png_series(png_dir)
    if frame is not None:
        check_frame(grey.shape[0], files, frame)
    return MaskSource(
        values=grey,
        source=png_dir,
        files=files,
        geometry=frame.geometry if frame else None,
        geometry_source=str(frame.source) if frame else None,
        modality=modality,
        frame=frame,
    )


def _load_seg(
    path: Path, frame: ReferenceFrame | None, shape: tuple[int, ...] | None
) -> MaskSource:
    """A DICOM-SEG as organ ids on the reference series' grid."""
    if frame is None or shape is None:
        raise DataError(
            f"{path}: a DICOM-SEG is placed on the reference's DICOM series; pass --dicom with "
            "that series (or give a CHAOS case folder as the reference)"
        )
    if frame.slice_count and frame.slice_count != shape[0]:
        raise DataError(
            f"{frame.source}: {frame.slice_count} slices, the reference mask {shape[0]}"
        )
    labels = read_dicom_seg(
        path,
        frame.geometry,
        (int(shape[0]), int(shape[1]), int(shape[2])),
        frame.series_uid,
        frame.frame_of_reference_uid,
    )
    return MaskSource(
        values=labels,
        source=path,
        files=[path],
        geometry=frame.geometry,
        geometry_source=str(frame.source),
        modality=frame.modality,
        is_volume_file=True,
    )


def _restack_onto(mask: MaskSource, anchor: Geometry | None) -> None:
    """A volume-file mask holding the anchor's slices in another order (a series read by slice
    position, scored against CHAOS file-name order) is put in the anchor's order."""
    if anchor is None or not mask.is_volume_file or mask.geometry is None:
        return
    if mask.geometry.isclose(anchor):
        return
    perm = slice_permutation(mask.geometry, anchor, mask.values.shape[0])
    if perm is not None:
        mask.values = mask.values[perm]
        mask.geometry = anchor


def load_pair(
    ref: Path | str,
    pred: Path | str,
    dicom: Path | str | None = None,
    modality: Modality | str | None = None,
) -> EvaluationInput:
    """Read a reference and a prediction onto one grid, settling the modality and the geometry.

    Modality: ``modality`` > the ``dicom`` header > the reference's source > the prediction's.
    Geometry: the ``dicom`` series > the reference's > the prediction's; two differing file
    geometries without ``dicom`` are an error, as is no geometry at all.
    """
    frame = dicom_frame(dicom) if dicom is not None else None
    ref, pred = Path(ref), Path(pred)
    ref_is_seg, pred_is_seg = (
        p.is_file() and not is_volume_file(p) and is_dicom_seg(p) for p in (ref, pred)
    )
    if ref_is_seg and pred_is_seg:
        raise DataError(
            f"{ref} and {pred} are both DICOM-SEG; give the reference as a PNG folder, a CHAOS case "
            "or a volume file"
        )
    if ref_is_seg:
        pred_mask = load_mask(pred)
        ref_mask = load_mask(ref, frame or pred_mask.frame, pred_mask.shape)
    else:
        ref_mask = load_mask(ref)
        pred_mask = load_mask(pred, frame or ref_mask.frame, ref_mask.shape)
    anchor = frame.geometry if frame is not None else ref_mask.geometry
    for mask in (ref_mask, pred_mask):
        _restack_onto(mask, anchor)
    check_same_grid(ref_mask, pred_mask)
    if frame is not None:
        check_frame(ref_mask.shape[0], ref_mask.files, frame)

    if modality is not None:
        chosen = Modality.parse(modality)
    elif frame is not None and frame.modality is not Modality.UNKNOWN:
        chosen = frame.modality
    else:
        known = [m.modality for m in (ref_mask, pred_mask) if m.modality is not Modality.UNKNOWN]
        chosen = known[0] if known else Modality.UNKNOWN

    if frame is not None:
        geometry, geometry_source = frame.geometry, str(frame.source)
    else:
        placed = [m for m in (ref_mask, pred_mask) if m.geometry is not None]
        if not placed:
            raise DataError(
                f"no voxel geometry for {ref_mask.source} and {pred_mask.source}: PNG masks carry "
                "no millimetres; pass --dicom with the case's DICOM folder"
            )
        if len(placed) == 2 and not placed[0].geometry.isclose(placed[1].geometry):
            raise DataError(
                f"reference geometry ({placed[0].geometry_source}) and prediction geometry "
                f"({placed[1].geometry_source}) differ; pass --dicom to choose the DICOM series"
            )
        geometry, geometry_source = placed[0].geometry, str(placed[0].geometry_source)
    return EvaluationInput(
        ref_labels=ref_mask.labels(chosen),
        pred_labels=pred_mask.labels(chosen),
        geometry=geometry,
        modality=chosen,
        geometry_source=geometry_source,
        ref=ref_mask,
        pred=pred_mask,
    )


def check_same_grid(ref: MaskSource, pred: MaskSource) -> None:
    """Shapes must agree slice for slice; a mismatch names both sources and what differs."""
    if ref.shape == pred.shape:
        return
    (rz, ry, rx), (pz, py, px) = ref.shape, pred.shape
    if rz != pz:
        raise DataError(
            f"reference {ref.describe()} has {rz} slices but prediction {pred.describe()} has "
            f"{pz}; a slice is missing or the series differ"
        )
    raise DataError(
        f"reference {ref.describe()} slices are {rx}x{ry} pixels but prediction "
        f"{pred.describe()} slices are {px}x{py}"
    )


def check_frame(slices: int, files: list[Path], frame: ReferenceFrame) -> None:
    """The DICOM series must hold one slice per mask slice."""
    if frame.slice_count and frame.slice_count != slices:
        shown = f"{files[0].parent} ({files[0].name} … {files[-1].name})" if files else "the mask"
        raise DataError(
            f"{shown} has {slices} slices but the DICOM series {frame.source} has "
            f"{frame.slice_count}; a slice is missing"
        )
