"""One builder for the small nnU-Net and MSD datasets the tests read, break and inspect.

Images are tiny (6x8x10) random volumes on a shared grid; label maps hold every label value, so a valid
dataset passes every check and each test breaks exactly one thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE = (6, 8, 10)  # z, y, x
SPACING = (1.5, 1.5, 3.0)
ORIGIN = (-7.5, -6.0, 10.0)
LABELS = {"background": 0, "liver": 1, "spleen": 2, "aorta": 3}


def image(array: np.ndarray, spacing=SPACING, origin=ORIGIN) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(spacing)
    out.SetOrigin(origin)
    return out


def label_array(seed: int, labels: dict = LABELS) -> np.ndarray:
    """Every foreground value of ``labels`` in blocks along x, background elsewhere."""
    values = sorted({v for v in labels.values() if isinstance(v, int) and v > 0})
    if any(isinstance(v, list) for v in labels.values()):
        values = sorted({x for v in labels.values() if isinstance(v, list) for x in v})
    out = np.zeros(SHAPE, np.uint8)
    for index, value in enumerate(values):
        out[1 + seed % 2 : 5, 2:6, index * 2 : index * 2 + 2] = value
    return out


def channel_array(seed: int, channel: int) -> np.ndarray:
    rng = np.random.default_rng(100 * seed + channel)
    return rng.normal(0, 100, SHAPE).astype(np.int16)


def build_nnunet(
    root: Path,
    cases: tuple[str, ...] = ("case_a", "case_b"),
    channels: tuple[str, ...] = ("CT",),
    labels: dict | None = None,
    file_ending: str = ".nii.gz",
    test_cases: tuple[str, ...] = (),
    extra: dict | None = None,
) -> Path:
    """A valid nnU-Net v2 raw dataset at ``root``."""
    labels = dict(LABELS if labels is None else labels)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for seed, case in enumerate(cases):
        for index in range(len(channels)):
            sitk.WriteImage(
                image(channel_array(seed, index)),
                str(root / "imagesTr" / f"{case}_{index:04d}{file_ending}"),
            )
        sitk.WriteImage(
            image(label_array(seed, labels)), str(root / "labelsTr" / f"{case}{file_ending}")
        )
    if test_cases:
        (root / "imagesTs").mkdir()
        for seed, case in enumerate(test_cases):
            for index in range(len(channels)):
                sitk.WriteImage(
                    image(channel_array(seed, index)),
                    str(root / "imagesTs" / f"{case}_{index:04d}{file_ending}"),
                )
    manifest = {
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": file_ending,
        **(extra or {}),
    }
    write_json(root / "dataset.json", manifest)
    return root


def build_msd(
    root: Path,
    cases: tuple[str, ...] = ("case_a", "case_b"),
    channels: tuple[str, ...] = ("T1", "T2"),
    labels: dict | None = None,
) -> Path:
    """A valid MSD dataset at ``root``: 4D images (channels in the 4th dimension) when several channels."""
    labels = dict({"0": "background", "1": "liver", "2": "spleen"} if labels is None else labels)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for seed, case in enumerate(cases):
        parts = [image(channel_array(seed, index)) for index in range(len(channels))]
        volume = parts[0] if len(parts) == 1 else sitk.JoinSeries(parts)
        sitk.WriteImage(volume, str(root / "imagesTr" / f"{case}.nii.gz"))
        nn_labels = {name: int(value) for value, name in labels.items()}
        sitk.WriteImage(
            image(label_array(seed, nn_labels)), str(root / "labelsTr" / f"{case}.nii.gz")
        )
        training.append(
            {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
        )
    write_json(
        root / "dataset.json",
        {
            "name": "test",
            "tensorImageSize": "4D",
            "modality": {str(i): name for i, name in enumerate(channels)},
            "labels": labels,
            "numTraining": len(cases),
            "numTest": 0,
            "training": training,
            "test": [],
        },
    )
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2))


def edit_json(path: Path, **changes: object) -> None:
    """Set (or, with ``None``, remove) top-level keys of a JSON file."""
    data = read_json(path)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    write_json(path, data)
