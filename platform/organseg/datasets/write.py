"""Writing labelled datasets in the nnU-Net v2 raw and MSD layouts (synthetic data, conversions).

Only voxels and geometry are written: no source header metadata travels into the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from organseg.datasets.base import FILE_ENDINGS
from organseg.datasets.modalities import CASE_MAP_KEY, CHANNEL_MAP_KEY
from organseg.errors import DataError
from organseg.io.volume import Volume
from organseg.labels import LabelSet

#: ``dataset.json`` keys read the same way from nnU-Net and MSD datasets (``datasets/nnunet.py``,
#: ``datasets/msd.py``): carried from one format into the other.
SHARED_KEYS = (CHANNEL_MAP_KEY, CASE_MAP_KEY, "label_codes")


class CaseToWrite(NamedTuple):
    """One case for a writer: its channels (one grid, dataset channel order) and label map."""

    case_id: str
    channels: list[Volume]
    label: Volume | None


def plain_image(volume: Volume, dtype: np.dtype | type | None = None) -> sitk.Image:
    """A SimpleITK image of ``volume``'s voxels and geometry, without any metadata."""
    array = np.ascontiguousarray(volume.array if dtype is None else volume.array.astype(dtype))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    return image


def label_dtype(label_set: LabelSet) -> type:
    return np.uint8 if max(label_set.allowed_values()) < 256 else np.uint16


def prepare_output(out: Path, overwrite: bool = False) -> Path:
    """``out`` created; refused when it holds files, unless ``overwrite`` and it holds a dataset.json."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"{out}: folder is not empty; use --overwrite to replace the dataset in it"
            )
        if not (out / "dataset.json").is_file():
            raise DataError(f"{out}: holds no dataset.json; refusing to replace it")
        import shutil

        for name in ("imagesTr", "labelsTr", "imagesTs", "dataset.json", "splits_final.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _check_case(case: CaseToWrite, channel_names: list[str]) -> None:
    if len(case.channels) != len(channel_names):
        raise DataError(
            f"case {case.case_id}: {len(case.channels)} channel(s), expected {len(channel_names)}"
        )
    first = case.channels[0]
    for name, channel in zip(channel_names[1:], case.channels[1:], strict=True):
        if channel.shape != first.shape or not channel.geometry.isclose(first.geometry):
            raise DataError(
                f"case {case.case_id}: channel {name!r} is on another grid than channel "
                f"{channel_names[0]!r}; channels must share one grid"
            )


def write_nnunet(
    out: Path | str,
    cases: Iterable[CaseToWrite],
    channel_names: list[str],
    label_set: LabelSet,
    name: str,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write an nnU-Net v2 raw dataset: ``imagesTr/{case}_{XXXX}{file_ending}``, ``labelsTr``,
    ``dataset.json``; cases without a label map go to ``imagesTs``. Returns ``out``."""
    if file_ending not in FILE_ENDINGS:
        raise DataError(f"file_ending {file_ending!r} is not one of {list(FILE_ENDINGS)}")
    out = prepare_output(Path(out), overwrite)
    (out / "imagesTr").mkdir()
    (out / "labelsTr").mkdir()
    count = 0
    for case in cases:
        _check_case(case, channel_names)
        folder = out / ("imagesTr" if case.label is not None else "imagesTs")
        folder.mkdir(exist_ok=True)
        for index, channel in enumerate(case.channels):
            sitk.WriteImage(
                plain_image(channel),
                str(folder / f"{case.case_id}_{index:04d}{file_ending}"),
                useCompression=True,
            )
        if case.label is not None:
            sitk.WriteImage(
                plain_image(case.label, label_dtype(label_set)),
                str(out / "labelsTr" / f"{case.case_id}{file_ending}"),
                useCompression=True,
            )
            count += 1
    manifest = {
        "name": name,
        "channel_names": {str(i): n for i, n in enumerate(channel_names)},
        "labels": label_set.to_nnunet(),
        "numTraining": count,
        "file_ending": file_ending,
        **(extra or {}),
    }
    if label_set.regions_class_order is not None:
        manifest["regions_class_order"] = list(label_set.regions_class_order)
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def write_msd(
    out: Path | str,
    cases: Iterable[CaseToWrite],
    channel_names: list[str],
    label_set: LabelSet,
    name: str,
    overwrite: bool = False,
    extra: dict | None = None,
) -> Path:
    """Write an MSD dataset: ``imagesTr/{case}.nii.gz`` (4D, channels last, when several channels),
    ``labelsTr/{case}.nii.gz`` and ``dataset.json`` with ``training`` (and the keys of ``extra``).
    Returns ``out``."""
    if label_set.region_based or label_set.ignore is not None:
        raise DataError("the MSD format has no region or ignore labels; write nnU-Net instead")
    out = prepare_output(Path(out), overwrite)
    (out / "imagesTr").mkdir()
    (out / "labelsTr").mkdir()
    training = []
    for case in cases:
        _check_case(case, channel_names)
        images = [plain_image(c) for c in case.channels]
        image = images[0] if len(images) == 1 else sitk.JoinSeries(images)
        sitk.WriteImage(
            image, str(out / "imagesTr" / f"{case.case_id}.nii.gz"), useCompression=True
        )
        entry = {"image": f"./imagesTr/{case.case_id}.nii.gz"}
        if case.label is not None:
            sitk.WriteImage(
                plain_image(case.label, label_dtype(label_set)),
                str(out / "labelsTr" / f"{case.case_id}.nii.gz"),
                useCompression=True,
            )
            entry["label"] = f"./labelsTr/{case.case_id}.nii.gz"
        training.append(entry)
    manifest = {
        "name": name,
        "tensorImageSize": "4D" if len(channel_names) > 1 else "3D",
        "modality": {str(i): n for i, n in enumerate(channel_names)},
        "labels": {"0": "background", **{str(lb.value): lb.name for lb in label_set}},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        **(extra or {}),
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def nnunet_to_msd(src: Path | str, out: Path | str, overwrite: bool = False) -> Path:
    """An MSD copy of a valid nnU-Net dataset (same cases, channels, label values), with the
    ``dataset.json`` keys organseg reads in both formats (:data:`SHARED_KEYS`: channel and case
    modality maps, label codes) copied as they are, so the copy routes and codes the same."""
    from organseg.datasets.nnunet import open_nnunet

    dataset = open_nnunet(src).require_valid()
    assert dataset.label_set is not None
    cases = (CaseToWrite(c.case_id, list(c.channels), c.label) for c in dataset.iter_cases())
    manifest = json.loads((dataset.root / "dataset.json").read_text())
    name = manifest.get("name", dataset.root.name)
    # MSD channel names are the nnU-Net channel names, so maps keyed by number or name stay valid
    shared = {key: manifest[key] for key in SHARED_KEYS if key in manifest}
    return write_msd(
        out, cases, list(dataset.channel_names), dataset.label_set, str(name), overwrite, shared
    )
