"""What to segment when a user points at a path: one series, or each series of a CHAOS case/dataset.

:func:`plan_inputs` only looks at the folder layout (no pixels are read), so a command can check its
outputs and skip series the ensemble cannot take before any work; each :class:`InputPlan` loads its
volume(s) on demand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from organseg.ensemble.assembly import PRIMARY, stacked_modalities
from organseg.errors import DataError
from organseg.io import discover_cases, load_case, read_any
from organseg.io.chaos import CaseRef
from organseg.io.readers import _looks_like_chaos
from organseg.io.volume import Modality, Volume
from organseg.preprocess.config import PreprocessConfig


@dataclass
class PredictInput:
    """One thing to segment; ``partner`` is the T1 out-phase series that pairs with an in-phase one,
    ``t2`` the same patient's T2-SPIR when the ensemble stacks it as a third channel."""

    name: str
    image: Volume
    partner: Volume | None = None
    t2: Volume | None = None
    #: channel name → volume, for a model that stacks a dataset's channels (``image`` is the first)
    channels: dict[str, Volume] | None = None


@dataclass
class InputPlan:
    """One series to segment, before reading it.

    ``case_id`` is the CHAOS case id (``CT/1``, ``MR/2/T2SPIR``, ``MR/2/T1DUAL`` for stacked in+out
    phases, ``Test/CT/3``) or, for a single file or DICOM folder, its name. ``modality`` is what the
    CHAOS layout says (None when only the headers or the file can tell).
    """

    case_id: str
    modality: Modality | None
    load: Callable[[], PredictInput]
    chaos: bool = False
    split: str = "train"


def plan_inputs(
    path: Path | str,
    modality: Modality | str | None = None,
    stack_t1: bool = False,
    with_t2: bool = False,
    channels: Sequence[tuple[str, Modality]] = (),
) -> list[InputPlan]:
    """The series to segment under ``path`` (a file, a DICOM folder, or a CHAOS case/dataset folder).

    ``channels`` (name, modality) are the input channels of a model that stacks a dataset's
    channels: ``path`` is then one channel file of an nnU-Net-named case (``CASE_0000.nii.gz``; its
    ``CASE_XXXX`` siblings are the other channels) or a folder of such files (``imagesTs``), one
    input per case (:func:`plan_channel_cases`).

    A CHAOS MR case yields its T2-SPIR series and its T1 series: one stacked input (in + out) when the
    ensemble stacks T1, else both phases separately; ``with_t2`` adds the case's T2-SPIR to the stacked
    input as its third channel. ``modality`` narrows a CHAOS folder to one series kind, or sets the
    modality of a file that does not record it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if channels:
        return plan_channel_cases(path, channels)
    if not (path.is_dir() and (path.name in ("CT", "MR") or _looks_like_chaos(path))):
        return [
            InputPlan(
                _stem(path), None, lambda: PredictInput(_stem(path), read_any(path, modality))
            )
        ]
    refs = discover_cases(path)
    # which series go together is the assembly's rule; CHAOS only says where each one lies
    stacked = stacked_modalities("stack" if stack_t1 else None, with_t2)
    if modality is not None:
        wanted = Modality.parse(modality)
        channels = stacked - {PRIMARY} if wanted is PRIMARY else frozenset()
        refs = [r for r in refs if r.modality is wanted or r.modality in channels]
    if not refs:
        raise DataError(
            f"{path}: no series to segment" + (f" for --modality {modality}" if modality else "")
        )
    by_case = {(r.patient, r.modality): r for r in refs}
    plans = []
    for ref in refs:
        if stacked and ref.modality is Modality.MR_T1_OUT:
            continue  # consumed as the partner of its in-phase series
        if modality is not None and ref.modality is not wanted:
            continue  # a T2-SPIR kept only as a third channel
        partner = t2 = None
        case_id = ref.case_id
        if stacked and ref.modality is PRIMARY:
            partner = by_case.get((ref.patient, Modality.MR_T1_OUT))
            if partner is None:
                raise DataError(
                    f"{ref.image_dir}: T1 in-phase has no out-phase partner to stack with"
                )
            case_id = ref.case_id.replace("/T1DUAL-in", "/T1DUAL")
            if Modality.MR_T2SPIR in stacked:
                t2 = by_case.get((ref.patient, Modality.MR_T2SPIR))
                if t2 is None:
                    raise DataError(
                        f"{ref.image_dir}: the model stacks T2-SPIR as a third T1 channel, and "
                        "this MR case has no T2SPIR series"
                    )
        plans.append(
            InputPlan(case_id, ref.modality, _loader(case_id, ref, partner, t2), True, ref.split)
        )
    return plans


def _loader(
    case_id: str, ref: CaseRef, partner: CaseRef | None, t2: CaseRef | None = None
) -> Callable[[], PredictInput]:
    def load() -> PredictInput:
        image = load_case(ref, with_label=False).image
        other = load_case(partner, with_label=False).image if partner is not None else None
        third = load_case(t2, with_label=False).image if t2 is not None else None
        return PredictInput(case_id, image, other, third)

    return load


def channel_pairs(preprocess: PreprocessConfig) -> tuple[tuple[str, Modality], ...]:
    """(name, modality) of each input channel of a model that stacks a dataset's channels; empty
    for every other model."""
    return tuple((c.name, c.modality) for c in preprocess.channels or ())


#: An nnU-Net channel file name: ``{case}_{XXXX}{ending}``.
_CHANNEL_FILE = re.compile(
    r"^(?P<case>.+)_(?P<index>\d{4})(?P<ending>\.nii\.gz|\.nii|\.nrrd|\.mha)$"
)


def plan_channel_cases(path: Path, channels: Sequence[tuple[str, Modality]]) -> list[InputPlan]:
    """One input per nnU-Net-named case under ``path`` (a channel file of one case, or a folder of
    them), channel ``i`` read from ``{case}_{i:04d}{ending}`` and named ``channels[i]``. A case
    missing a channel file, or holding one more than the model takes, fails when loaded, naming the
    channel and file (a batch refuses that case alone)."""
    names = [name for name, _ in channels]
    if path.is_file():
        match = _CHANNEL_FILE.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: the model reads the channels {', '.join(names)} of a case together; give "
                "one channel file named as nnU-Net names them (CASE_0000.nii.gz, CASE_0001.nii.gz, "
                "...; the others are found beside it) or a folder of such files"
            )
        folder, cases = path.parent, {(match["case"], match["ending"])}
    else:
        folder = path
        cases = {
            (m["case"], m["ending"])
            for m in (_CHANNEL_FILE.match(p.name) for p in sorted(path.iterdir()))
            if m is not None
        }
        if not cases:
            raise DataError(
                f"{path}: no nnU-Net channel files (CASE_0000.nii.gz, ...) here; the model reads "
                f"the channels {', '.join(names)} of a case together"
            )
    return [
        InputPlan(case, channels[0][1], _channel_loader(folder, case, ending, channels))
        for case, ending in sorted(cases)
    ]


def channel_gaps(present: Iterable[int], count: int) -> tuple[list[int], list[int]]:
    """The channel indices a case's files lack (of the model's ``count``), and those it holds beyond
    them: what both a prediction and a batch run refuse a case for."""
    held = set(present)
    return [i for i in range(count) if i not in held], sorted(i for i in held if i >= count)


def _channel_loader(
    folder: Path, case: str, ending: str, channels: Sequence[tuple[str, Modality]]
) -> Callable[[], PredictInput]:
    def load() -> PredictInput:
        present = sorted(
            int(m["index"])
            for m in (_CHANNEL_FILE.match(p.name) for p in folder.glob(f"{case}_*{ending}"))
            if m is not None and m["case"] == case
        )
        lacking, beyond = channel_gaps(present, len(channels))
        missing = [f"{channels[i][0]} ({case}_{i:04d}{ending})" for i in lacking]
        if missing:
            raise DataError(
                f"{folder}: case {case} lacks channel(s) {', '.join(missing)}; the model reads "
                f"{', '.join(n for n, _ in channels)} together"
            )
        extra = [f"{case}_{i:04d}{ending}" for i in beyond]
        if extra:
            raise DataError(
                f"{folder}: case {case} has more channels than the model takes ({', '.join(extra)}); "
                f"it reads {len(channels)}: {', '.join(n for n, _ in channels)}"
            )
        volumes = {}
        for i, (name, modality) in enumerate(channels):
            volume = read_any(folder / f"{case}_{i:04d}{ending}", modality)
            volume.meta["channel"] = name
            volume.meta["case_id"] = case
            volumes[name] = volume
        return PredictInput(case, volumes[channels[0][0]], channels=volumes)

    return load


def resolve_inputs(
    path: Path | str,
    modality: Modality | str | None = None,
    stack_t1: bool = False,
    with_t2: bool = False,
) -> list[PredictInput]:
    """Every input of :func:`plan_inputs`, loaded."""
    return [plan.load() for plan in plan_inputs(path, modality, stack_t1, with_t2)]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
