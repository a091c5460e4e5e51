"""What every labelled-dataset adapter shares: case references, loaded cases, problems and the
checks of a case's contents (grids, label values) that nnU-Net and MSD datasets have in common."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from organseg.datasets.modalities import (
    CASE_MAP_KEY,
    CHANNEL_MAP_KEY,
    EMPTY,
    ModalityMap,
    parse_case_map,
    parse_channel_map,
    resolve,
)
from organseg.errors import DataError
from organseg.io.volume import Geometry, Volume
from organseg.labels import Code, LabelSet, StructureCode
from organseg.modalities import Modality

#: File endings nnU-Net v2's SimpleITK reader handles, and so do we.
FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: ``where`` is the file or ``dataset.json`` key it concerns."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: ``images`` holds one file per channel (nnU-Net) or one 4D file (MSD)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    split: str = "train"


@dataclass
class LabelledCase:
    """One loaded case: its channels on one grid (in the dataset's channel order) and its label map."""

    case_id: str
    channels: tuple[Volume, ...]
    label: Volume | None

    @property
    def image(self) -> Volume:
        """The first channel (the only one of single-channel datasets)."""
        return self.channels[0]


@dataclass
class LabelledDataset:
    """A dataset read as it lies on disk. ``problems`` holds what opening it found (layout,
    ``dataset.json``); :meth:`check` adds what reading every case finds."""

    root: Path
    format: str
    channel_names: tuple[str, ...]
    label_set: LabelSet | None
    cases: tuple[CaseFiles, ...]
    test_cases: tuple[CaseFiles, ...] = ()
    problems: list[Problem] = field(default_factory=list)
    splits: list[dict[str, list[str]]] | None = None
    #: The explicit channel and case modality maps (:mod:`organseg.datasets.modalities`).
    modality_map: ModalityMap = EMPTY

    # -- modalities -----------------------------------------------------------------------------
    def with_modality_map(
        self, channels: Mapping[str, Any] | None, cases: Mapping[str, Any] | None, where: str
    ) -> LabelledDataset:
        """This dataset with the config's maps (``where``: their config key, e.g. ``dataset``)
        replacing its own where given; a map that does not fit the dataset is a :class:`DataError`
        naming the config key."""
        if channels is None and cases is None:
            return self
        found: list[tuple[str, str]] = []
        current = self.modality_map
        mapping = ModalityMap(
            current.channels
            if channels is None
            else parse_channel_map(
                dict(channels), self.channel_names, f"{where}.channel_modalities", found
            ),
            current.cases
            if cases is None
            else parse_case_map(
                dict(cases), len(self.channel_names), f"{where}.case_modalities", found
            ),
            current.channels_from if channels is None else f"{where}.channel_modalities",
            current.cases_from if cases is None else f"{where}.case_modalities",
        )
        if found:
            raise DataError("; ".join(f"{key}: {message}" for key, message in found))
        return replace(self, modality_map=mapping, problems=list(self.problems))

    def case_modalities(self) -> tuple[dict[str, tuple[Modality, ...]], list[Problem]]:
        """Each case's channel modalities (``unknown`` where nothing establishes one) and the
        problems of the case map, each naming its key."""
        ids = [c.case_id for c in (*self.cases, *self.test_cases)]
        result, found = resolve(self.channel_names, ids, self.modality_map)
        json_path = self.root / "dataset.json"
        problems = [
            Problem(key if key.startswith("dataset.") else f"{json_path}: {key}", message)
            for key, message in found
        ]
        return result, problems

    def modalities_of(self, case: CaseFiles) -> tuple[Modality, ...]:
        """The modality of each channel of ``case``."""
        return resolve(self.channel_names, [case.case_id], self.modality_map)[0][case.case_id]

    # -- reading --------------------------------------------------------------------------------
    def read_channels(self, case: CaseFiles) -> list[sitk.Image]:
        """The case's channels as SimpleITK images (overridden for 4D files)."""
        return [read_image(path) for path in case.images]

    def load(self, case: CaseFiles | str, with_label: bool = True) -> LabelledCase:
        """Read one case; its problems (grids, label values) are a :class:`DataError` naming the file."""
        if isinstance(case, str):
            case = self.case(case)
        problems = self.check_case(case, with_label=with_label)
        if problems:
            raise DataError(join_problems(problems))
        channels = tuple(
            _volume(image, name, case.case_id, modality)
            for image, name, modality in zip(
                self.read_channels(case), self.channel_names, self.modalities_of(case), strict=True
            )
        )
        label = None
        if with_label and case.label is not None:
            label = Volume.from_sitk(_plain(read_image(case.label)), meta={"case_id": case.case_id})
        return LabelledCase(case.case_id, channels, label)

    def iter_cases(self, with_label: bool = True) -> Iterator[LabelledCase]:
        """Every training case, loaded lazily one at a time."""
        for case in self.cases:
            yield self.load(case, with_label=with_label)

    def case(self, case_id: str) -> CaseFiles:
        for case in (*self.cases, *self.test_cases):
            if case.case_id == case_id:
                return case
        raise DataError(f"{self.root}: no case {case_id!r}")

    def split(self, fold: int) -> tuple[list[str], list[str]]:
        """Training and validation case ids of ``fold`` from ``splits_final.json``."""
        if self.splits is None:
            raise DataError(f"{self.root / 'splits_final.json'}: absent; no folds to choose from")
        if not 0 <= fold < len(self.splits):
            raise DataError(
                f"{self.root / 'splits_final.json'}: no fold {fold}; it has folds 0-{len(self.splits) - 1}"
            )
        entry = self.splits[fold]
        return list(entry["train"]), list(entry["val"])

    # -- checking -------------------------------------------------------------------------------
    def check(self, deep: bool = True) -> list[Problem]:
        """Every problem: the layout's and, with ``deep``, every case's grids and label values."""
        problems = list(self.problems) + self.case_modalities()[1]
        if deep and self.label_set is not None and self.channel_names:
            for case in self.cases:
                problems += self.check_case(case)
            for case in self.test_cases:
                problems += self.check_case(case, with_label=False)
        return problems

    def require_valid(self, deep: bool = True) -> LabelledDataset:
        """This dataset, or one :class:`DataError` listing every problem before anything trains."""
        problems = self.check(deep)
        if problems:
            raise DataError(
                f"{self.root}: {len(problems)} problem(s) in this {self.format} dataset: "
                + join_problems(problems)
            )
        return self

    def channel_infos(self, case: CaseFiles) -> list[tuple[str, Path, Grid]]:
        """``(channel name, file, grid)`` per channel, from headers only."""
        return [
            (name, path, header_grid(path))
            for name, path in zip(self.channel_names, case.images, strict=True)
        ]

    def check_case(self, case: CaseFiles, with_label: bool = True) -> list[Problem]:
        """Grids of the channels and the label map, and the label map's values."""
        missing = [p for p in (*case.images, case.label) if p is not None and not p.is_file()]
        if missing:
            return [Problem(str(p), f"missing (case {case.case_id})") for p in missing]
        problems: list[Problem] = []
        try:
            infos = self.channel_infos(case)
        except DataError as exc:  # the message starts with the unreadable file
            where, _, message = str(exc).partition(": ")
            return [Problem(where, f"{message} (case {case.case_id})")]
        first_name, first_path, grid = infos[0]
        for name, path, other in infos[1:]:
            if not other.matches(grid):
                problems.append(
                    Problem(
                        str(path),
                        f"case {case.case_id}: channel {name!r} is on another grid than channel "
                        f"{first_name!r} ({other.describe()} vs {grid.describe()}); channels must share one grid",
                    )
                )
        if with_label and case.label is not None and self.label_set is not None:
            problems += check_label_map(case, self.label_set, grid, first_path)
        return problems


@dataclass(frozen=True)
class Grid:
    """A voxel grid from an image header: size ``(x, y, z)`` and geometry."""

    size: tuple[int, ...]
    geometry: Geometry

    def matches(self, other: Grid) -> bool:
        return self.size == other.size and self.geometry.isclose(other.geometry)

    def describe(self) -> str:
        g = self.geometry
        return (
            f"size {'x'.join(map(str, self.size))}, spacing {tuple(round(s, 5) for s in g.spacing)}, "
            f"origin {tuple(round(o, 3) for o in g.origin)}"
        )


def _reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(
            f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})"
        ) from None
    return reader


def header_grid(path: Path, dimensions: int = 3) -> Grid:
    """The 3D grid of an image file from its header (the first three axes of a 4D file)."""
    reader = _reader(path)
    dim = reader.GetDimension()
    if dim < 3 and dimensions == 3:
        raise DataError(f"{path}: a {dim}D image; expected a 3D volume")
    size = tuple(int(s) for s in reader.GetSize()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(dim, dim)[:3, :3].ravel()
    geometry = Geometry(reader.GetSpacing()[:3], reader.GetOrigin()[:3], tuple(direction))
    return Grid(size, geometry)


def read_image(path: Path) -> sitk.Image:
    """A whole image file, or a :class:`DataError` naming it."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(
            f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})"
        ) from None


def _plain(image: sitk.Image) -> sitk.Image:
    """The image without file metadata (nothing of a source header travels on)."""
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return image


def read_modality_map(
    data: Mapping[str, Any],
    channel_names: tuple[str, ...],
    json_path: Path,
    problems: list[Problem],
) -> ModalityMap:
    """The ``organseg_channel_modalities`` / ``organseg_case_modalities`` keys of ``dataset.json``
    (:mod:`organseg.datasets.modalities`), their problems added to ``problems``."""
    found: list[tuple[str, str]] = []
    mapping = ModalityMap(
        parse_channel_map(data.get(CHANNEL_MAP_KEY), channel_names, CHANNEL_MAP_KEY, found),
        parse_case_map(data.get(CASE_MAP_KEY), len(channel_names), CASE_MAP_KEY, found),
    )
    problems += [Problem(f"{json_path}: {key}", message) for key, message in found]
    return mapping


def _volume(image: sitk.Image, channel: str, case_id: str, modality: Modality) -> Volume:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"case {case_id}: channel {channel!r} is a vector/RGB image, not a volume")
    return Volume.from_sitk(
        _plain(image), modality=modality, meta={"case_id": case_id, "channel": channel}
    )


def check_label_map(
    case: CaseFiles, label_set: LabelSet, grid: Grid, image_path: Path
) -> list[Problem]:
    """The label map's grid against the image's, its type and its values against the label set."""
    assert case.label is not None
    where = str(case.label)
    try:
        image = read_image(case.label)
    except DataError as exc:
        return [Problem(where, str(exc).split(": ", 1)[-1])]
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
        return [Problem(where, f"case {case.case_id}: a label map must be one 3D scalar image")]
    label_grid = Grid(
        tuple(int(s) for s in image.GetSize()),
        Geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection()),
    )
    problems = []
    if not label_grid.matches(grid):
        problems.append(
            Problem(
                where,
                f"case {case.case_id}: label map grid ({label_grid.describe()}) differs from the image "
                f"{image_path.name} ({grid.describe()})",
            )
        )
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            return [
                *problems,
                Problem(where, f"case {case.case_id}: label map holds NaN or infinite values"),
            ]
        if not np.equal(np.mod(array, 1), 0).all():
            return [
                *problems,
                Problem(
                    where,
                    f"case {case.case_id}: label map holds non-integer values; labels are integers",
                ),
            ]
    elif array.dtype.kind not in "iu":
        return [
            *problems,
            Problem(where, f"case {case.case_id}: label map of type {array.dtype} is not integer"),
        ]
    present = {int(v) for v in np.unique(array)}
    unknown = sorted(present - label_set.allowed_values())
    if unknown:
        problems.append(
            Problem(
                where,
                f"case {case.case_id}: label value(s) {unknown} not in dataset.json labels "
                f"(allowed {sorted(label_set.allowed_values())})",
            )
        )
    return problems


def join_problems(problems: Sequence[Problem]) -> str:
    return "; ".join(str(p) for p in problems)


def open_dataset_json(
    root: Path | str, required: tuple[str, ...], why: str
) -> tuple[Path, dict[str, Any], list[Problem]]:
    """The opening both formats share: ``root`` (a folder, else :class:`DataError`), its
    ``dataset.json`` (``{}`` when unreadable) and the problems so far, a missing ``required`` key
    among them (``why`` says which format requires it)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    problems: list[Problem] = []
    data = read_dataset_json(root, problems) or {}
    for key in required:
        if data and key not in data:
            problems.append(Problem(f"{root / 'dataset.json'}: {key}", f"missing ({why})"))
    return root, data, problems


def read_dataset_json(root: Path, problems: list[Problem]) -> dict[str, Any] | None:
    """``root/dataset.json`` as a mapping, or None with the reason added to ``problems``."""
    path = root / "dataset.json"
    if not path.is_file():
        problems.append(Problem(str(path), "missing"))
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem(str(path), f"not valid JSON ({exc})"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(str(path), "must hold a JSON object"))
        return None
    return data


def parse_label_codes(
    raw: Any, label_set: LabelSet, problems: list[Problem], json_path: Path
) -> LabelSet:
    """Apply the optional ``label_codes`` key of ``dataset.json``: label name → ``[value, scheme,
    meaning]`` (the property type) or ``{"type": [...], "category": [...], "laterality": [...]}``."""
    if raw is None:
        return label_set
    if not isinstance(raw, Mapping):
        problems.append(Problem(f"{json_path}: label_codes", "must map label names to codes"))
        return label_set
    from organseg.labels import _ANATOMY

    def code(key: str, value: Any) -> Code | None:
        if value is None:
            return None
        if (
            isinstance(value, (list, tuple))
            and len(value) == 3
            and all(isinstance(v, str) and v for v in value)
        ):
            return Code(*value)
        problems.append(Problem(f"{json_path}: {key}", "a code is [value, scheme, meaning]"))
        return None

    codes: dict[str, StructureCode] = {}
    for name, value in raw.items():
        key = f"label_codes.{name}"
        if name not in label_set.names:
            problems.append(Problem(f"{json_path}: {key}", f"no label {name!r} in labels"))
            continue
        if isinstance(value, Mapping):
            type_code = code(f"{key}.type", value.get("type"))
            category = code(f"{key}.category", value.get("category")) or _ANATOMY
            laterality = code(f"{key}.laterality", value.get("laterality"))
        else:
            type_code, category, laterality = code(key, value), _ANATOMY, None
        if type_code is not None:
            codes[name] = StructureCode(category, type_code, laterality)
    return label_set.with_codes(codes)
