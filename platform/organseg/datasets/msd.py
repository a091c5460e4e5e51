"""Medical Segmentation Decathlon (MSD) datasets, read as they lie on disk.

::

    <root>/dataset.json   modality {"0": "CT"}, labels {"0": "background", "1": "liver"},
                          numTraining, training [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                          test ["./imagesTs/y.nii.gz"]
    <root>/imagesTr/x.nii.gz   3D, or 4D with the channels in the 4th dimension

Paths in ``dataset.json`` are relative to ``root``. The optional ``label_codes``,
``organseg_channel_modalities`` and ``organseg_case_modalities`` keys work as in nnU-Net datasets
(channel maps keyed by channel number or by the ``modality`` name); ``nnunet_to_msd`` carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from organseg.datasets.base import (
    FILE_ENDINGS,
    CaseFiles,
    Grid,
    LabelledDataset,
    Problem,
    header_grid,
    open_dataset_json,
    parse_label_codes,
    read_image,
    read_modality_map,
)
from organseg.errors import DataError
from organseg.labels import LabelSet, parse_msd_labels

REQUIRED_KEYS = ("modality", "labels", "numTraining", "training")


def case_id_of(path: Path) -> str:
    """``imagesTr/liver_3.nii.gz`` → ``liver_3``."""
    for ending in FILE_ENDINGS:
        if path.name.endswith(ending):
            return path.name[: -len(ending)]
    return path.name


class MSDDataset(LabelledDataset):
    """An MSD dataset: one file per case holds every channel (the 4th dimension when several)."""

    def read_channels(self, case: CaseFiles) -> list[sitk.Image]:
        image = read_image(case.images[0])
        if image.GetDimension() == 3:
            return [image]
        size = list(image.GetSize())
        return [sitk.Extract(image, [*size[:3], 0], [0, 0, 0, c]) for c in range(size[3])]

    def channel_infos(self, case: CaseFiles) -> list[tuple[str, Path, Grid]]:
        path = case.images[0]
        grid = header_grid(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        count = reader.GetSize()[3] if dim == 4 else 1
        if dim not in (3, 4) or count != len(self.channel_names):
            raise DataError(
                f"{path}: holds {count} channel(s) (a {dim}D image) but dataset.json modality "
                f"names {len(self.channel_names)}"
            )
        # the channels of one 4D file share its grid by construction
        return [(name, path, grid) for name in self.channel_names]


def _entry_path(
    root: Path, value: Any, key: str, json_path: Path, problems: list[Problem]
) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(Problem(f"{json_path}: {key}", "must be a relative file path"))
        return None
    path = (root / value).resolve()
    if not path.is_file():
        problems.append(
            Problem(f"{json_path}: {key}", f"lists {value} but {root / value} is absent")
        )
        return None
    return root / value


def open_msd(root: Path | str) -> MSDDataset:
    """The dataset at ``root`` with every problem of its ``dataset.json`` and listed files in
    ``problems``; :meth:`LabelledDataset.check` reads the cases too."""
    root, data, problems = open_dataset_json(root, REQUIRED_KEYS, "the MSD format requires it")
    json_path = root / "dataset.json"
    modality = data.get("modality")
    channel_names: tuple[str, ...] = ()
    if (
        isinstance(modality, Mapping)
        and modality
        and all(str(k).isdigit() for k in modality)
        and sorted(int(k) for k in modality) == list(range(len(modality)))
    ):
        channel_names = tuple(str(modality[str(i)]) for i in range(len(modality)))
    if "modality" in data and not channel_names:
        problems.append(
            Problem(
                f"{json_path}: modality",
                'must map channel numbers 0..N-1 to names, e.g. {"0": "CT"}',
            )
        )
    label_set = None
    if "labels" in data:
        label_problems, _ = parse_msd_labels(data["labels"])
        problems += [Problem(f"{json_path}: {key}", message) for key, message in label_problems]
        if not label_problems:
            label_set = LabelSet.from_msd(data["labels"], name=str(data.get("name", root.name)))
            label_set = parse_label_codes(data.get("label_codes"), label_set, problems, json_path)
    cases: list[CaseFiles] = []
    training = data.get("training", [])
    if not isinstance(training, list):
        problems.append(
            Problem(f"{json_path}: training", "must be a list of {image, label} entries")
        )
        training = []
    for index, entry in enumerate(training):
        key = f"training[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(Problem(f"{json_path}: {key}", 'must be {"image": ..., "label": ...}'))
            continue
        image = _entry_path(root, entry.get("image"), f"{key}.image", json_path, problems)
        label = _entry_path(root, entry.get("label"), f"{key}.label", json_path, problems)
        if image is not None and label is not None:
            cases.append(CaseFiles(case_id_of(image), (image,), label, "train"))
    expected = data.get("numTraining")
    if "numTraining" in data and expected != len(training):
        problems.append(
            Problem(
                f"{json_path}: numTraining",
                f"is {expected!r} but training lists {len(training)} case(s)",
            )
        )
    test_cases: list[CaseFiles] = []
    test = data.get("test", [])
    if not isinstance(test, list):
        problems.append(Problem(f"{json_path}: test", "must be a list of image paths"))
        test = []
    for index, value in enumerate(test):
        image = _entry_path(root, value, f"test[{index}]", json_path, problems)
        if image is not None:
            test_cases.append(CaseFiles(case_id_of(image), (image,), None, "test"))
    return MSDDataset(
        root=root,
        format="msd",
        channel_names=channel_names,
        modality_map=read_modality_map(data, channel_names, json_path, problems),
        label_set=label_set,
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        problems=problems,
    )
