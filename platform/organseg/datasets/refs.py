"""Training samples of an nnU-Net or MSD dataset, in the shape the slice cache plans CHAOS series.

A :class:`DatasetRef` is one channel of one case, with the modality its channel name states
(:func:`~organseg.datasets.base.channel_modality`). The slice cache groups refs into samples the way it
groups CHAOS series: a single-channel case is one sample; a case whose channels are T1 in- and
out-phase is one stacked sample (``t1_mode: stack``) or two (``separate``). A channel whose modality
cannot be established is refused, naming the ``dataset.json`` key: routing never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from organseg.datasets.base import CaseFiles, LabelledDataset, channel_modality
from organseg.errors import DataError
from organseg.io.volume import Modality, Volume

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

    @property
    def image_dir(self) -> str:
        """Where the ref's image lives (named in errors, like a CHAOS series folder)."""
        return str(self.case.images[min(self.channel, len(self.case.images) - 1)])

    @property
    def mask_dir(self) -> str | None:
        return None if self.case.label is None else str(self.case.label)


class DatasetCase(NamedTuple):
    """One loaded channel: what :func:`organseg.io.chaos.load_case` gives for a CHAOS series."""

    case_id: str
    modality: Modality
    image: Volume
    label: Volume | None


def channel_modalities(dataset: LabelledDataset) -> tuple[Modality, ...]:
    """The modality of each channel, or a :class:`DataError` naming the ``dataset.json`` key of every
    channel whose name states none."""
    key = CHANNEL_KEY.get(dataset.format, "channel_names")
    modalities = tuple(channel_modality(name) for name in dataset.channel_names)
    unknown = [
        f"{key}.{i} ({name!r})"
        for i, (name, m) in enumerate(zip(dataset.channel_names, modalities, strict=True))
        if m is Modality.UNKNOWN
    ]
    if unknown:
        known = [m.value for m in Modality.known()]
        raise DataError(
            f"{dataset.root / 'dataset.json'}: {', '.join(unknown)}: the modality of this channel "
            f"cannot be established; name each channel by one of {known} (a model is routed by "
            "modality, and organseg does not guess it)"
        )
    return modalities


def dataset_refs(dataset: LabelledDataset) -> list[DatasetRef]:
    """One ref per channel of every labelled training case (a single-channel case: sample id = case id;
    several channels: ``<case>/<modality>``)."""
    modalities = channel_modalities(dataset)
    if len(set(modalities)) != len(modalities):
        raise DataError(
            f"{dataset.root / 'dataset.json'}: {CHANNEL_KEY.get(dataset.format)} names one modality "
            f"twice ({list(dataset.channel_names)}); each channel must be its own modality"
        )
    refs = []
    for case in dataset.cases:
        if case.label is None:
            continue
        for channel, modality in enumerate(modalities):
            sample = case.case_id if len(modalities) == 1 else f"{case.case_id}/{modality.value}"
            refs.append(DatasetRef(sample, case.case_id, modality, dataset, case, channel))
    return refs


def load_ref(ref: DatasetRef, with_label: bool = True) -> DatasetCase:
    """Read the ref's channel (and the case's label map), checked as the dataset checks its cases."""
    loaded = ref.dataset.load(ref.case, with_label=with_label)
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
