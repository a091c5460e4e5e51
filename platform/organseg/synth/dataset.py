"""``write_dataset``: a whole synthetic CHAOS training set on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from organseg.errors import ConfigError, DataError
from organseg.synth.case import case_seed, default_slices, make_case
from organseg.synth.dicom_writer import write_case

#: Marks a ``Train_Sets`` folder as written by this generator, so ``overwrite`` never deletes
#: real data that happens to sit in the output folder.
MARKER = ".organseg-synth.json"
MIN_SIZE = 32
MIN_SLICES = 4
#: Bounds checked before anything is written: the phantom builder holds ~200 bytes per voxel of a
#: series at its peak (measured: 0.7 GB for a 256² x 48 MR case), so 2**25 voxels (512² x 128)
#: is ~6 GB; CHAOS itself has 512² CT and 256² MR slices.
MAX_SIZE = 1024
MAX_SLICES = 512
MAX_VOXELS = 2**25
BYTES_PER_VOXEL = 200


def write_dataset(
    out: Path | str,
    ct: int = 2,
    mr: int = 2,
    size: int = 128,
    slices: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``ct`` CT and ``mr`` MR synthetic cases under ``out/Train_Sets`` in the CHAOS layout.

    Case ids run 1..N per modality. ``slices`` defaults to a count that scales with ``size``
    (32 CT / 24 MR slices at 128²). The same arguments give byte-identical files.

    A non-empty ``out`` is refused unless ``overwrite``; then only ``out/Train_Sets`` is replaced,
    and only if this generator wrote it. The new set is written beside the old one and swapped in
    at the end, so an interrupted run leaves no half-written ``Train_Sets``. Returns ``out``.
    """
    check_bounds(ct, mr, size, slices)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    target = out / "Train_Sets"
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"{out}: folder is not empty; use overwrite (--overwrite) to replace it"
            )
        if target.exists() and not (target / MARKER).is_file():
            raise DataError(
                f"{target}: not written by organseg's synthetic generator; refusing to replace it"
            )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".Train_Sets.partial"
    try:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        for kind, count in (("CT", ct), ("MR", mr)):
            for index in range(1, count + 1):
                case = make_case(kind, size, slices, case_seed(seed, kind, index), index)  # type: ignore[arg-type]
                write_case(partial, case)
        settings = {"ct": ct, "mr": mr, "size": size, "slices": slices, "seed": seed}
        (partial / MARKER).write_text(json.dumps(settings, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:  # any failure or Ctrl-C: leave no hidden half-written set behind
        shutil.rmtree(partial, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return out


def check_bounds(ct: int, mr: int, size: int, slices: int | None) -> None:
    """Refuse, before any work, counts and sizes the generator cannot (or need not) produce."""
    if ct < 0 or mr < 0:
        raise ConfigError(f"case counts must be >= 0, got ct={ct}, mr={mr}")
    if ct == 0 and mr == 0:
        raise ConfigError("no cases asked for: give at least one CT or MR case (--ct N, --mr N)")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(
            f"size must be {MIN_SIZE}-{MAX_SIZE} pixels, got {size} (CHAOS slices are 256-512)"
        )
    if slices is not None and not MIN_SLICES <= slices <= MAX_SLICES:
        raise ConfigError(f"slices must be {MIN_SLICES}-{MAX_SLICES}, got {slices}")
    depth = max(
        (slices if slices is not None else default_slices(kind, size))  # type: ignore[arg-type]
        for kind, count in (("CT", ct), ("MR", mr))
        if count
    )
    voxels = size * size * depth
    if voxels > MAX_VOXELS:
        raise ConfigError(
            f"a {size}x{size}x{depth} series is {voxels / 1e6:.0f} M voxels and would need about "
            f"{voxels * BYTES_PER_VOXEL / 2**30:.0f} GiB to generate; the limit is "
            f"{MAX_VOXELS / 1e6:.1f} M voxels (e.g. 512x512x128): lower the size or the slices"
        )
