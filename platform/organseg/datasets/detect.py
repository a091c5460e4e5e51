"""Which layout a dataset folder is in (``nnunet``, ``msd`` or ``chaos``), and why."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

from organseg.errors import DataError

Format = Literal["nnunet", "msd", "chaos"]
FORMATS: tuple[str, ...] = ("nnunet", "msd", "chaos")


def detect_format(root: Path | str) -> tuple[Format, str] | None:
    """``(format, reason)`` for a dataset folder, or None when it is in none of the three layouts.

    ``dataset.json`` decides between nnU-Net v2 (``channel_names``) and MSD (``modality``); a folder
    whose series the CHAOS layout finds is CHAOS.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict):
            if "channel_names" in data:
                return "nnunet", f"{manifest} has channel_names (nnU-Net v2 raw)"
            if "modality" in data:
                return "msd", f"{manifest} has modality (Medical Segmentation Decathlon)"
        if (root / "imagesTr").is_dir():
            return (
                "nnunet",
                f"{manifest} and imagesTr/ (nnU-Net v2 raw; dataset.json needs channel_names)",
            )
    from organseg.io.chaos import discover_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            refs = discover_cases(root)
        except DataError:
            refs = []
    if refs:
        return "chaos", f"{root} holds {len(refs)} series in the CHAOS layout (Train_Sets/CT, MR)"
    return None


def open_dataset(root: Path | str, format: str | None = None):
    """The nnU-Net or MSD dataset at ``root`` (``format`` as given or detected)."""
    from organseg.datasets.msd import open_msd
    from organseg.datasets.nnunet import open_nnunet

    root = Path(root)
    if format is None:
        found = detect_format(root)
        if found is None:
            raise DataError(
                f"{root}: not an nnU-Net, MSD or CHAOS dataset (no dataset.json, no Train_Sets/CT or MR)"
            )
        format = found[0]
    if format == "nnunet":
        return open_nnunet(root)
    if format == "msd":
        return open_msd(root)
    if format == "chaos":
        raise DataError(f"{root}: a CHAOS dataset is read with organseg.io.chaos")
    raise DataError(f"dataset.format: {format!r} is not one of {list(FORMATS)}")
