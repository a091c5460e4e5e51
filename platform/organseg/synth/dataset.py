"""``write_dataset``: a whole synthetic CHAOS training set on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from organseg.errors import ConfigError, DataError
from organseg.synth.case import case_seed, make_case
from organseg.synth.dicom_writer import write_case

#: Marks a ``Train_Sets`` folder as written by this generator, so ``overwrite`` never deletes
#: real data that happens to sit in the output folder.
MARKER = ".organseg-synth.json"
MIN_SIZE = 32
MIN_SLICES = 4


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
    if ct < 0 or mr < 0:
        raise ConfigError(f"case counts must be >= 0, got ct={ct}, mr={mr}")
    if size < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if slices is not None and slices < MIN_SLICES:
        raise ConfigError(f"slices must be at least {MIN_SLICES}, got {slices}")
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
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".Train_Sets.partial"
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
    return out
