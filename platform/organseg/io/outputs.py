"""Writing a predicted label map in the format the user asked for."""

from __future__ import annotations

from pathlib import Path

from organseg.errors import DataError
from organseg.io.files import is_volume_file, write_volume_file
from organseg.io.png import write_png_series
from organseg.io.volume import Volume

FORMATS = ("auto", "nifti", "png", "dicom-seg")


def output_format(out: Path, fmt: str = "auto") -> str:
    """``auto`` picks by name: a volume-file suffix means that file, ``.dcm`` DICOM-SEG, else a PNG folder."""
    if fmt not in FORMATS:
        raise DataError(f"unknown output format {fmt!r}; choose one of {FORMATS}")
    if fmt != "auto":
        return fmt
    if is_volume_file(out):
        return "nifti"
    if out.suffix.lower() == ".dcm":
        return "dicom-seg"
    return "png"


def write_labels(
    labels: Volume,
    out: Path,
    fmt: str = "auto",
    source_dicom: Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``labels`` as a volume file, a CHAOS PNG series folder or a DICOM-SEG object."""
    out = Path(out)
    kind = output_format(out, fmt)
    if kind == "nifti":
        if not is_volume_file(out):
            out = out.with_name(out.name + ".nii.gz")
        if out.exists() and not overwrite:
            raise DataError(f"{out}: exists; pass --overwrite to replace it")
        return [write_volume_file(labels, out)]
    if kind == "png":
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
    return [write_dicom_seg(labels, source_dicom, out)]
