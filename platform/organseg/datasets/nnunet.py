"""nnU-Net v2 raw datasets, read as they lie on disk.

::

    <root>/dataset.json          channel_names, labels, numTraining, file_ending
    <root>/imagesTr/{case}_{XXXX}{file_ending}    one file per channel XXXX (0000, 0001, ...)
    <root>/labelsTr/{case}{file_ending}
    <root>/imagesTs/{case}_{XXXX}{file_ending}    optional
    <root>/splits_final.json     optional: [{"train": [...], "val": [...]}, ...] one entry per fold

``labels`` maps names to values (``background`` 0, consecutive values, an optional ``ignore`` that is
the highest value); a list of values is a region and needs ``regions_class_order``. An optional
``label_codes`` key gives SNOMED CT (or other) codes for labels organseg's table does not know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from organseg.datasets.base import (
    FILE_ENDINGS,
    CaseFiles,
    LabelledDataset,
    Problem,
    open_dataset_json,
    parse_label_codes,
    read_modality_map,
)
from organseg.labels import LabelSet, parse_nnunet_labels

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _channel_names(raw: Any, where: str, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(raw, Mapping) or not raw:
        problems.append(Problem(where, 'must map channel numbers to names, e.g. {"0": "CT"}'))
        return ()
    keys = list(raw)
    if any(not str(k).isdigit() for k in keys) or sorted(int(k) for k in keys) != list(
        range(len(keys))
    ):
        problems.append(
            Problem(where, f"keys must be the channel numbers 0..{len(keys) - 1}, got {keys}")
        )
        return ()
    return tuple(str(raw[str(i)] if str(i) in raw else raw[i]) for i in range(len(keys)))


def _scan_images(
    folder: Path, file_ending: str, n_channels: int, problems: list[Problem]
) -> dict[str, set[int]]:
    """Case id → channel numbers found in ``folder``; files that fit no pattern are problems."""
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")
    found: dict[str, set[int]] = {}
    for path in _visible_files(folder):
        match = pattern.match(path.name)
        if match is None:
            problems.append(
                Problem(
                    str(path),
                    f"not named {{case}}_{{XXXX}}{file_ending} (dataset.json file_ending is "
                    f"{file_ending!r})",
                )
            )
            continue
        channel = int(match["channel"])
        if channel >= n_channels:
            problems.append(
                Problem(
                    str(path),
                    f"channel {channel:04d} but dataset.json channel_names has {n_channels} channel(s)",
                )
            )
            continue
        found.setdefault(match["case"], set()).add(channel)
    return found


def _case_files(
    folder: Path, case: str, file_ending: str, n_channels: int, label: Path | None, split: str
) -> CaseFiles:
    images = tuple(folder / f"{case}_{i:04d}{file_ending}" for i in range(n_channels))
    return CaseFiles(case, images, label, split)


def open_nnunet(root: Path | str) -> LabelledDataset:
    """The dataset at ``root`` with every problem of its layout and ``dataset.json`` in ``problems``
    (call :meth:`LabelledDataset.check` to read the cases too). Never raises for a broken dataset
    whose folder exists; ``problems`` says what is wrong, each naming its file or key."""
    root, data, problems = open_dataset_json(root, REQUIRED_KEYS, "nnU-Net v2 requires it")
    json_path = root / "dataset.json"
    if "dataset" in data:
        problems.append(
            Problem(
                f"{json_path}: dataset",
                "explicit per-case file lists are not supported; lay the files out in "
                "imagesTr/labelsTr as {case}_{XXXX}{file_ending}",
            )
        )
    file_ending = data.get("file_ending", ".nii.gz")
    if "file_ending" in data and file_ending not in FILE_ENDINGS:
        problems.append(
            Problem(
                f"{json_path}: file_ending",
                f"{file_ending!r} is not one organseg reads; use one of {list(FILE_ENDINGS)}",
            )
        )
    channel_names = (
        _channel_names(data["channel_names"], f"{json_path}: channel_names", problems)
        if "channel_names" in data
        else ()
    )
    label_set = None
    if "labels" in data:
        label_problems, _, _ = parse_nnunet_labels(data["labels"], data.get("regions_class_order"))
        problems += [Problem(f"{json_path}: {key}", message) for key, message in label_problems]
        if not label_problems:
            label_set = LabelSet.from_nnunet(
                data["labels"],
                data.get("regions_class_order"),
                name=str(data.get("name", root.name)),
            )
            label_set = parse_label_codes(data.get("label_codes"), label_set, problems, json_path)

    cases: list[CaseFiles] = []
    test_cases: list[CaseFiles] = []
    images_tr, labels_tr, images_ts = root / "imagesTr", root / "labelsTr", root / "imagesTs"
    for folder in (images_tr, labels_tr):
        if not folder.is_dir():
            problems.append(Problem(str(folder), "missing"))
    usable = bool(channel_names) and file_ending in FILE_ENDINGS
    if usable and images_tr.is_dir() and labels_tr.is_dir():
        found = _scan_images(images_tr, file_ending, len(channel_names), problems)
        labels: dict[str, Path] = {}
        for path in _visible_files(labels_tr):
            if not path.name.endswith(file_ending):
                problems.append(
                    Problem(str(path), f"not a {file_ending} file (dataset.json file_ending)")
                )
                continue
            labels[path.name[: -len(file_ending)]] = path
        misnamed: set[str] = set()
        for name in list(labels):  # a label map named like a channel file: say so, once
            stem = re.fullmatch(r"(.+)_\d{4}", name)
            if name not in found and stem and stem[1] in found and stem[1] not in labels:
                problems.append(
                    Problem(
                        str(labels.pop(name)),
                        f"label maps are named {{case}}{file_ending}, without a channel number: "
                        f"rename it to {stem[1]}{file_ending}",
                    )
                )
                misnamed.add(stem[1])
        for case in sorted(set(found) | set(labels)):
            if case in misnamed:
                continue
            if case not in labels:
                problems.append(
                    Problem(
                        str(labels_tr / f"{case}{file_ending}"),
                        f"missing: case {case} has images but no label map",
                    )
                )
                continue
            for channel in range(len(channel_names)):
                if channel not in found.get(case, set()):
                    problems.append(
                        Problem(
                            str(images_tr / f"{case}_{channel:04d}{file_ending}"),
                            f"missing: channel {channel} ({channel_names[channel]!r}) of case {case}",
                        )
                    )
            if found.get(case) == set(range(len(channel_names))):
                cases.append(
                    _case_files(
                        images_tr, case, file_ending, len(channel_names), labels[case], "train"
                    )
                )
        expected = data.get("numTraining")
        listed = len(set(found) | set(labels))
        if isinstance(expected, int) and not isinstance(expected, bool):
            if expected != listed:
                problems.append(
                    Problem(
                        f"{json_path}: numTraining",
                        f"is {expected} but imagesTr/labelsTr hold {listed} case(s)",
                    )
                )
        elif "numTraining" in data:
            problems.append(
                Problem(f"{json_path}: numTraining", f"must be an integer, got {expected!r}")
            )
    if usable and images_ts.is_dir():
        found_ts = _scan_images(images_ts, file_ending, len(channel_names), problems)
        for case in sorted(found_ts):
            missing = set(range(len(channel_names))) - found_ts[case]
            for channel in sorted(missing):
                problems.append(
                    Problem(
                        str(images_ts / f"{case}_{channel:04d}{file_ending}"),
                        f"missing: channel {channel} ({channel_names[channel]!r}) of test case {case}",
                    )
                )
            if not missing:
                test_cases.append(
                    _case_files(images_ts, case, file_ending, len(channel_names), None, "test")
                )
    splits = _read_splits(root, {c.case_id for c in cases}, problems)
    return LabelledDataset(
        root=root,
        format="nnunet",
        channel_names=channel_names,
        modality_map=read_modality_map(data, channel_names, json_path, problems),
        label_set=label_set,
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        problems=problems,
        splits=splits,
    )


def _read_splits(
    root: Path, case_ids: set[str], problems: list[Problem]
) -> list[dict[str, list[str]]] | None:
    """``splits_final.json`` when present, each fold's cases checked against the dataset's."""
    path = root / "splits_final.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem(str(path), f"not valid JSON ({exc})"))
        return None
    if not isinstance(raw, list) or not all(
        isinstance(f, dict) and all(isinstance(f.get(k), list) for k in ("train", "val"))
        for f in raw
    ):
        problems.append(
            Problem(str(path), 'must be a list of folds, each {"train": [...], "val": [...]}')
        )
        return None
    for fold, entry in enumerate(raw):
        for part in ("train", "val"):
            absent = sorted(str(c) for c in entry[part] if c not in case_ids)
            if absent:
                problems.append(
                    Problem(
                        f"{path}: [{fold}].{part}",
                        f"lists case(s) absent from the dataset: {absent}",
                    )
                )
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in raw]
