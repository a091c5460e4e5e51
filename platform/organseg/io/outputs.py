"""Writing predicted label maps in the format the user asked for, and planning where they go.

:func:`plan_outputs` decides every path a prediction run will write (label maps, overlay folders)
from the output name and the series to segment, before any pixel is read; :func:`check_free` then
refuses to replace anything that exists unless the user said so. Several series go to a folder in
the CHAOS layout (``OUT/CT/1``, ``OUT/MR/2/T2SPIR`` …), exactly what ``organseg evaluate`` reads
in dataset mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from organseg.errors import DataError
from organseg.io.files import VOLUME_SUFFIXES, is_volume_file, volume_suffix, write_volume_file
from organseg.io.png import write_png_series
from organseg.io.volume import Volume
from organseg.labels import LabelSet

FORMATS = ("auto", "nifti", "png", "dicom-seg")
#: Suffixes that name one file: a folder of several series cannot carry them.
_FILE_SUFFIXES = (*VOLUME_SUFFIXES, ".dcm", ".png")


def output_format(out: Path, fmt: str = "auto") -> str:
    """``auto`` picks by name: a volume-file suffix means that file, ``.dcm`` DICOM-SEG, else a PNG folder."""
    if fmt not in FORMATS:
        raise DataError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if is_volume_file(out):
        return "nifti"
    if out.suffix.lower() == ".dcm":
        return "dicom-seg"
    return "png"


def file_suffix(path: Path) -> str | None:
    """The one-file suffix ``path`` ends with (``.nii.gz``, ``.dcm``, ``.png`` …), or None."""
    name = path.name.lower()
    return volume_suffix(path) or next((s for s in _FILE_SUFFIXES if name.endswith(s)), None)


@dataclass(frozen=True)
class OutputTarget:
    """Where one series' label map (and overlay folder) goes; ``kind`` is nifti, png or dicom-seg."""

    case_id: str
    labels: Path
    kind: str
    overlay: Path | None = None


def layout_path(case_id: str, both_splits: bool) -> str:
    """The CHAOS-layout path of a case id: ``CT/1``, ``MR/2/T2SPIR``; with training and test cases
    in one run, under ``Train_Sets``/``Test_Sets`` so they cannot collide."""
    if case_id.startswith("Test/"):
        rest = case_id.removeprefix("Test/")
        return f"Test_Sets/{rest}" if both_splits else rest
    return f"Train_Sets/{case_id}" if both_splits else case_id


def plan_outputs(
    out: Path,
    fmt: str,
    case_ids: Sequence[str],
    overlay: Path | None = None,
    chaos_layout: bool = False,
) -> list[OutputTarget]:
    """The targets of a run segmenting ``case_ids`` into ``out``: one file or folder, or a folder in
    the CHAOS layout when there are several series (or ``chaos_layout`` and ``out`` names a folder:
    a dataset with one series still lands where ``evaluate`` looks). Raises DataError for a name
    that cannot hold what is asked (``seg.png``, ``multi.nii.gz`` for several series)."""
    out = Path(out)
    kind = output_format(out, fmt)
    suffix = file_suffix(out)
    if kind == "png" and suffix == ".png":
        raise DataError(
            f"{out}: a PNG mask series is one file per slice, written into a folder; name a folder "
            f"(e.g. {out.with_suffix('')}) or a .nii.gz / .dcm file"
        )
    several = len(case_ids) > 1
    if not several and not (chaos_layout and suffix is None):
        target = out
        if kind == "nifti" and not is_volume_file(out):
            target = out.with_name(out.name + ".nii.gz")
        elif kind == "dicom-seg" and out.suffix.lower() != ".dcm":
            target = out.with_name(out.name + ".dcm")
        return [OutputTarget(case_ids[0], target, kind, overlay)]
    if suffix is not None:
        shown = ", ".join(case_ids[:4]) + (", …" if len(case_ids) > 4 else "")
        raise DataError(
            f"{out}: the input holds {len(case_ids)} series ({shown}); they are written into a "
            f"folder in the CHAOS layout ({out.with_name(out.name.removesuffix(suffix))}/CT/1 …), "
            f"which a {suffix} name cannot hold; name a folder and choose the format with --format"
        )
    if out.is_file():
        raise DataError(f"{out}: is a file; several series need a folder")
    ending = {"nifti": ".nii.gz", "dicom-seg": ".dcm", "png": ""}[kind]
    both = any(c.startswith("Test/") for c in case_ids) and not all(
        c.startswith("Test/") for c in case_ids
    )
    targets = []
    for case_id in case_ids:
        rel = layout_path(case_id, both)
        targets.append(
            OutputTarget(
                case_id,
                out / f"{rel}{ending}",
                kind,
                None if overlay is None else overlay / rel,
            )
        )
    return targets


def occupied(path: Path, folder: bool) -> bool:
    """True when writing ``path`` would replace something: a file, or a non-empty folder."""
    if folder:
        return path.is_file() or (path.is_dir() and any(path.iterdir()))
    return path.exists()


def check_free(paths: Sequence[tuple[Path, bool]], overwrite: bool) -> None:
    """Refuse, before any work, to replace any of ``paths`` (``(path, is_folder)``) unless ``overwrite``;
    a folder where a file goes (or the reverse) is refused either way."""
    wrong = [p for p, folder in paths if (p.is_dir() if not folder else p.is_file())]
    if wrong:
        raise DataError(
            f"{wrong[0]}: is a {'folder' if wrong[0].is_dir() else 'file'}; "
            "choose another output name"
        )
    if overwrite:
        return
    taken = [p for p, folder in paths if occupied(p, folder)]
    if taken:
        shown = ", ".join(str(p) for p in taken[:3]) + (
            f" and {len(taken) - 3} more" if len(taken) > 3 else ""
        )
        raise DataError(
            f"{shown}: already exist{'s' if len(taken) == 1 else ''}; pass --overwrite to replace"
        )


def write_labels(
    labels: Volume,
    out: Path,
    fmt: str = "auto",
    source_dicom: Path | None = None,
    overwrite: bool = False,
    label_set: LabelSet | None = None,
) -> list[Path]:
    """Write ``labels`` as a volume file, a CHAOS PNG series folder or a DICOM-SEG object.

    ``label_set``: the labels of a model with its own label set (DICOM-SEG segments are named and
    coded from it); None: the CHAOS organs."""
    out = Path(out)
    kind = output_format(out, fmt)
    if kind == "nifti":
        if not is_volume_file(out):
            out = out.with_name(out.name + ".nii.gz")
        if out.exists() and not overwrite:
            raise DataError(f"{out}: exists; pass --overwrite to replace it")
        return [write_volume_file(labels, out)]
    if kind == "png":
        if out.suffix.lower() == ".png":
            raise DataError(f"{out}: a PNG mask series is written into a folder; name a folder")
        if label_set is not None:
            raise DataError(
                f"{out}: CHAOS PNG grey levels encode the four CHAOS organs only; write this "
                f"model's labels ({', '.join(label_set.names)}) as a volume file (.nii.gz) or .dcm"
            )
        return write_png_series(labels, out, modality=labels.modality, overwrite=overwrite)
    from organseg.io.dicomseg import write_dicom_seg

    if source_dicom is None:
        raise DataError(
            f"{out}: DICOM-SEG needs the source DICOM series (predict from a DICOM folder)"
        )
    if out.suffix.lower() != ".dcm":
        out = out.with_name(out.name + ".dcm")
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; pass --overwrite to replace it")
    return [write_dicom_seg(labels, source_dicom, out, label_set)]
