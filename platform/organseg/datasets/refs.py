"""Training samples of an nnU-Net or MSD dataset, in the shape the slice cache plans CHAOS series.

A :class:`DatasetRef` is one channel of one case, with the modality the dataset establishes for it
(:mod:`organseg.datasets.modalities`: a case map, a channel map, or the channel name itself). The
slice cache groups refs into samples the way it groups CHAOS series: a single-channel case is one
sample; a case whose channels are T1 in- and out-phase is one stacked sample (``t1_mode: stack``) or
two (``separate``). Any other multi-channel case (e.g. CT arterial + venous phase) is one ref for all
its channels when the dataset's channels are stacked (:func:`stacks_channels`), the nnU-Net reading
of ``_0000``, ``_0001``, ...: a multi-channel sample whose input channels are the case's channels in
dataset.json order. A channel whose modality cannot be established is refused, naming the key to set:
routing never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from organseg.datasets.base import CaseFiles, LabelledDataset, join_problems
from organseg.datasets.modalities import CHANNEL_MAP_KEY
from organseg.errors import DataError
from organseg.io.volume import Modality, Volume

#: Channel modalities combined by ``preprocess.t1_mode`` / ``t2_channel`` as CHAOS series are: a
#: dataset whose channels are all of these keeps that path unless ``dataset.channels`` says otherwise.
T1_PATH_MODALITIES = frozenset({Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR})

#: The ``dataset.json`` key naming a dataset's channels, per format.
CHANNEL_KEY = {"nnunet": "channel_names", "msd": "modality"}


@dataclass(frozen=True)
class DatasetRef:
    """One channel of one labelled case; ``case_id`` is the sample id, ``patient`` the case."""

    case_id: str
    patient: str
    modality: Modality
    dataset: LabelledDataset
    case: CaseFiles
    channel: int
    split: str = "train"
    #: Every channel's modality when the ref stands for all channels of the case, stacked (empty:
    #: the ref is the one channel ``channel``).
    stacked: tuple[Modality, ...] = ()

    @property
    def image_dir(self) -> str:
        """Where the ref's image lives (named in errors, like a CHAOS series folder)."""
        return str(self.case.images[max(0, min(self.channel, len(self.case.images) - 1))])

    @property
    def mask_dir(self) -> str | None:
        return None if self.case.label is None else str(self.case.label)


class DatasetCase(NamedTuple):
    """One loaded channel: what :func:`organseg.io.chaos.load_case` gives for a CHAOS series."""

    case_id: str
    modality: Modality
    image: Volume
    label: Volume | None
    #: Every channel, in dataset.json order, when the ref is stacked (``image`` is the first).
    channels: tuple[Volume, ...] = ()


def case_modalities(dataset: LabelledDataset) -> dict[str, tuple[Modality, ...]]:
    """Each case's channel modalities (:mod:`organseg.datasets.modalities`), or one
    :class:`DataError` naming the key of every channel or case whose modality nothing establishes."""
    resolved, problems = dataset.case_modalities()
    if problems:
        raise DataError(join_problems(problems))
    key = CHANNEL_KEY.get(dataset.format, "channel_names")
    unknown = [
        f"{key}.{i} ({name!r})"
        for i, name in enumerate(dataset.channel_names)
        if any(m[i] is Modality.UNKNOWN for m in resolved.values())
    ]
    if unknown:
        known = [m.value for m in Modality.known()]
        raise DataError(
            f"{dataset.root / 'dataset.json'}: {', '.join(unknown)}: the modality of this channel "
            f"cannot be established; name each channel by one of {known}, or map it with "
            f"{CHANNEL_MAP_KEY} in dataset.json or dataset.channel_modalities in the config (a "
            "model is routed by modality, and organseg does not guess it)"
        )
    return resolved


def stacks_channels(dataset: LabelledDataset, setting: str | None) -> bool:
    """Whether the cases' channels become one multi-channel input: ``setting`` is the config's
    ``dataset.channels`` (``stack``/``separate``); None: stacked when there are several channels,
    unless all are T1 in/out-phase or T2-SPIR (``preprocess.t1_mode`` combines those, as for CHAOS)."""
    if len(dataset.channel_names) < 2 or setting == "separate":
        return False
    if setting == "stack":
        return True
    modalities = {m for ms in case_modalities(dataset).values() for m in ms}
    return not modalities <= T1_PATH_MODALITIES


def dataset_refs(dataset: LabelledDataset, stack: bool = False) -> list[DatasetRef]:
    """One ref per channel of every labelled training case (a single-channel case: sample id = case id;
    several channels: ``<case>/<modality>``), each with its case's modality; with ``stack``, one
    ref per case for all its channels (sample id = case id, modality: the first channel's)."""
    resolved = case_modalities(dataset)
    refs = []
    for case in dataset.cases:
        modalities = resolved[case.case_id]
        if stack and len(modalities) > 1:
            if case.label is not None:
                refs.append(
                    DatasetRef(
                        case.case_id,
                        case.case_id,
                        modalities[0],
                        dataset,
                        case,
                        -1,
                        stacked=tuple(modalities),
                    )
                )
            continue
        if len(set(modalities)) != len(modalities):
            raise DataError(
                f"{dataset.root / 'dataset.json'}: {CHANNEL_KEY.get(dataset.format)} names one "
                f"modality twice ({list(dataset.channel_names)}); each channel must be its own "
                "modality, or stack the channels as one input (dataset.channels: stack)"
            )
        if case.label is None:
            continue
        for channel, modality in enumerate(modalities):
            sample = case.case_id if len(modalities) == 1 else f"{case.case_id}/{modality.value}"
            refs.append(DatasetRef(sample, case.case_id, modality, dataset, case, channel))
    return refs


def load_ref(ref: DatasetRef, with_label: bool = True) -> DatasetCase:
    """Read the ref's channel (and the case's label map), checked as the dataset checks its cases."""
    loaded = ref.dataset.load(ref.case, with_label=with_label)
    if ref.stacked:
        for volume, modality in zip(loaded.channels, ref.stacked, strict=True):
            volume.modality = modality
        first = loaded.channels[0]
        first.meta["case_id"] = ref.case_id
        return DatasetCase(ref.case_id, ref.modality, first, loaded.label, loaded.channels)
    image = loaded.channels[ref.channel]
    image.modality = ref.modality
    image.meta["case_id"] = ref.case_id
    return DatasetCase(ref.case_id, ref.modality, image, loaded.label)


def ref_fingerprint(ref: DatasetRef) -> list[object]:
    """Names, sizes and mtimes of the ref's files (no pixel reads), for the cache's reuse check."""
    files = [*ref.case.images, *([ref.case.label] if ref.case.label is not None else [])]
    listing = []
    for path in files:
        stat = path.stat()
        listing.append((path.name, stat.st_size, stat.st_mtime_ns))
    return [ref.case_id, ref.channel, listing]
