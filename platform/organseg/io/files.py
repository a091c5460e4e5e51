"""Single-file volumes (NIfTI, NRRD, MetaImage) through SimpleITK."""

from __future__ import annotations

import re
from pathlib import Path

import SimpleITK as sitk

from organseg.errors import ConfigError, DataError
from organseg.io.atomic import atomic_path
from organseg.io.volume import Volume

VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

# NIfTI and MetaImage drop arbitrary metadata, but keep ITK's file notes (NIfTI's ``descrip``): the
# modality rides there so a saved volume routes to the right ensemble when served.
_NOTES_KEY = "ITK_FileNotes"
_NOTES_MODALITY = re.compile(r"organseg modality=(\S+)")


def volume_suffix(path: Path | str) -> str | None:
    """The recognised volume-file suffix of ``path`` (``.nii.gz`` counts as one), or None."""
    name = str(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def is_volume_file(path: Path | str) -> bool:
    """Whether ``path`` names a single-file volume format organseg reads (NIfTI, MHA/MHD, NRRD)."""
    return volume_suffix(path) is not None


def read_volume_file(path: Path | str) -> Volume:
    """Read a NIfTI/NRRD/MHA volume; organseg's modality and metadata survive where the format keeps them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if volume_suffix(path) is None:
        raise DataError(f"{path}: not a volume file; expected one of {', '.join(VOLUME_SUFFIXES)}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: unreadable or corrupt volume file ({_last_line(exc)})") from None
    if image.GetDimension() not in (2, 3):
        raise DataError(f"{path}: {image.GetDimension()}D image; organseg reads 2D or 3D volumes")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected grey"
        )
    modality = None
    if image.HasMetaDataKey(_NOTES_KEY):
        found = _NOTES_MODALITY.search(image.GetMetaData(_NOTES_KEY))
        modality = found.group(1) if found else None
    try:
        volume = Volume.from_sitk(image, modality=modality)
    except ConfigError:  # a foreign file note that merely looks like ours
        volume = Volume.from_sitk(image)
    volume.meta.setdefault("source", str(path))
    return volume


def write_volume_file(volume: Volume, path: Path | str, compress: bool = True) -> Path:
    """Write atomically (temporary file then rename), so a crash never leaves half a file behind."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown output format; use one of {', '.join(VOLUME_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=suffix, private=True) as tmp:
            image = volume.to_sitk()
            image.SetMetaData(_NOTES_KEY, f"organseg modality={volume.modality.value}")
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot write ({_last_line(exc)})") from None
    return path


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
