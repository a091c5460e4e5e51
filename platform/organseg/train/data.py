"""From an experiment config to a ready slice cache and a patient-level train/validation split.

CHAOS folders give the CHAOS task's organs; nnU-Net and MSD datasets give their own label set and each
case's modality (:mod:`organseg.datasets.modalities`), checked whole before anything is prepared.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from organseg.config import ExperimentConfig, MemberConfig
from organseg.datasets.base import LabelledDataset
from organseg.errors import ConfigError, DataError, DataWarning
from organseg.io import discover_cases
from organseg.labels import LabelSet
from organseg.modalities import Modality
from organseg.preprocess.config import InputChannel
from organseg.preprocess.dataset import SliceCache
from organseg.preprocess.splits import kfold_splits, patient_split
from organseg.tasks import get_task


@dataclass
class PreparedData:
    """The cache every member reads, and which samples train and validate."""

    root: Path
    cache: SliceCache
    train_ids: list[str]
    val_ids: list[str]
    #: (train, validation) ids of each fold member (``<name>-fold<i>``) of the k-fold members.
    folds: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    #: The dataset's own label set (nnU-Net/MSD); None for CHAOS data (the task's organs).
    label_set: LabelSet | None = None

    def ids_for(self, member: MemberConfig, split: str) -> list[str]:
        """Samples of ``split`` whose modality the member accepts (a fold member: its fold's)."""
        if member.name in self.folds:
            return list(self.folds[member.name][0 if split == "train" else 1])
        ids = self.train_ids if split == "train" else self.val_ids
        accepted = {m.value for m in member.modalities or []}
        by_id = {s.id: s for s in self.cache.samples}
        return [i for i in ids if _modality_value(by_id[i]) in accepted]

    def assign_folds(self, member: MemberConfig, seed: int = 0) -> list[MemberConfig]:
        """The fold members of a ``folds: k`` member, each with its patient fold (all of the member's
        labelled samples, training and validation alike, are dealt into the k folds)."""
        units = member.fold_members()
        if not member.folds:
            return units
        ids = set(self.ids_for(member, "train")) | set(self.ids_for(member, "val"))
        samples = [s for s in self.cache.samples if s.id in ids]
        for unit, split in zip(units, kfold_splits(samples, member.folds, seed), strict=True):
            self.folds[unit.name] = split
        return units


def _modality_value(sample: object) -> str:
    modality = sample.modality  # type: ignore[attr-defined]
    return getattr(modality, "value", str(modality))


def dataset_root(config: ExperimentConfig) -> Path:
    """The CHAOS folder to train on; a synthetic one is generated on first use and reused afterwards."""
    if config.dataset.path is not None:
        if not config.dataset.path.is_dir():
            raise DataError(f"{config.dataset.path}: dataset folder not found (dataset.path)")
        return config.dataset.path
    synthetic = config.dataset.synthetic
    assert synthetic is not None
    root = config.cache_dir().parent / "data"
    if not (root / "Train_Sets").is_dir():
        from organseg.synth import write_dataset

        write_dataset(
            root,
            ct=synthetic.ct,
            mr=synthetic.mr,
            size=synthetic.size,
            slices=synthetic.slices,
            seed=synthetic.seed,
            overwrite=True,
        )
    return root


def open_labelled_dataset(config: ExperimentConfig, deep: bool = True):  # -> LabelledDataset
    """The config's nnU-Net/MSD dataset, with every problem (layout, ``dataset.json``, and with
    ``deep`` every case's grids and label values) raised as one :class:`DataError` naming file and
    key; region-based label sets and channels or cases of no established modality are refused (the
    config's ``dataset.channel_modalities`` / ``case_modalities`` replace the dataset's own maps)."""
    from organseg.datasets import open_dataset
    from organseg.datasets.refs import case_modalities

    path = config.dataset.path
    assert path is not None
    assert config.dataset.format is not None
    if not path.is_dir():
        raise DataError(f"{path}: dataset folder not found (dataset.path)")
    dataset = open_dataset(path, config.dataset.format).with_modality_map(
        config.dataset.channel_modalities, config.dataset.case_modalities, "dataset"
    )
    dataset = dataset.require_valid(deep=deep)
    assert dataset.label_set is not None  # a valid dataset has one
    if dataset.label_set.region_based:
        raise DataError(
            f"{path / 'dataset.json'}: regions_class_order: region-based labels (label values given "
            "as lists) are not supported for training yet; give each label one value"
        )
    case_modalities(dataset)
    if config.dataset.fold is not None:
        dataset.split(config.dataset.fold)  # a missing file or fold is named now
    return dataset


#: Architectures that feed the target itself to a network (IRE3D-Net's shape prior encodes it).
_TARGET_AS_INPUT = ("ire3d",)


def _refuse_targets_as_inputs(config: ExperimentConfig, json_path: Path) -> None:
    """With an ignore label, targets hold ignored voxels; a member that feeds targets to a network (a
    cGAN discriminator, a shape prior) would read them as masks, so it is refused, named."""
    for i, member in enumerate(config.members):
        if member.adversarial.enabled or member.arch in _TARGET_AS_INPUT:
            why = "adversarial.enabled" if member.adversarial.enabled else f"arch {member.arch!r}"
            raise ConfigError(
                f"members.{i}: member {member.name!r} ({why}) feeds the ground truth to a network, "
                f"which has no notion of the ignore label of {json_path} (labels.ignore); train it "
                "on fully annotated data, or use another member"
            )


def input_channels(
    config: ExperimentConfig, dataset: LabelledDataset
) -> tuple[InputChannel, ...] | None:
    """The dataset's channels as the members' stacked input (:func:`organseg.datasets.refs.stacks_channels`
    under ``dataset.channels``), or None when each channel is a sample of its own. With stacked
    channels every member, 2D or 3D, must take that many (``in_channels``): a member that does not
    is a :class:`ConfigError` naming its key and the number expected. 3D members read them as the
    channels of their volumes, z-scored per channel (:func:`organseg.preprocess.volumes.apply_intensity`)."""
    from organseg.datasets.refs import case_modalities, stacks_channels

    if not stacks_channels(dataset, config.dataset.channels):
        return None
    resolved = case_modalities(dataset)
    first = resolved[dataset.cases[0].case_id] if dataset.cases else ()
    channels = tuple(
        InputChannel(name=name, modality=modality)
        for name, modality in zip(dataset.channel_names, first, strict=True)
    )
    listed = ", ".join(f"{c.name} ({c.modality.value})" for c in channels)
    for i, member in enumerate(config.members):
        if member.in_channels != len(channels):
            raise ConfigError(
                f"members.{i}.in_channels: member {member.name!r} takes {member.in_channels} "
                f"channel(s), but {dataset.root} stacks its {len(channels)} channels ({listed}) as "
                f"one input (dataset.channels: stack); set in_channels: {len(channels)} (or "
                "dataset.channels: separate)"
            )
    return channels


def _prepare_dataset(config: ExperimentConfig) -> PreparedData:
    """An nnU-Net/MSD dataset: validated whole, cached with its label set, split by its folds."""
    from organseg.datasets.refs import dataset_refs

    dataset = open_labelled_dataset(config)
    label_set = dataset.label_set
    channels = input_channels(config, dataset)
    if channels is not None or config.preprocess.channels is not None:
        # the stacked channels travel with the preprocessing: cache, checkpoints, the model directory
        config.preprocess = config.preprocess.model_copy(update={"channels": channels})
    refs = dataset_refs(dataset, stack=channels is not None)
    if not refs:
        raise DataError(f"{dataset.root}: no labelled training cases")
    if label_set.ignore is not None:
        _refuse_targets_as_inputs(config, dataset.root / "dataset.json")
    present = list(dict.fromkeys(r.modality for r in refs))
    stacked = config.preprocess.t1_mode == "stack"
    for i, member in enumerate(config.members):
        if (
            member.modalities is None
        ):  # out-phase is the in-phase sample's second channel when stacked
            member.modalities = [m for m in present if not (stacked and m is Modality.MR_T1_OUT)]
        outside = [m.value for m in member.modalities if m not in present]
        if outside:
            raise ConfigError(
                f"members.{i}.modalities: member {member.name!r} accepts {outside}, which "
                f"{dataset.root} does not hold (its channels: {[m.value for m in present]})"
            )
    cache = SliceCache.build(
        refs, config.cache_dir(), config.preprocess, list(label_set.names), label_set
    )
    if dataset.splits is not None:
        fold = config.dataset.fold or 0
        train_cases, val_cases = dataset.split(fold)
        train_ids = [s.id for s in cache.samples if s.patient in set(train_cases)]
        val_ids = [s.id for s in cache.samples if s.patient in set(val_cases)]
    else:
        train_ids, val_ids = patient_split(
            cache.samples, val_fraction=config.dataset.val_fraction, seed=config.dataset.split_seed
        )
    if not val_ids:
        warnings.warn(
            DataWarning(f"{dataset.root}: a single case; validation Dice is measured on it"),
            stacklevel=2,
        )
        val_ids = list(train_ids)
    return PreparedData(
        root=dataset.root,
        cache=cache,
        train_ids=list(train_ids),
        val_ids=list(val_ids),
        label_set=label_set,
    )


def prepare_data(config: ExperimentConfig) -> PreparedData:
    """Discover the task's labelled cases, build (or reuse) the slice cache and split by patient."""
    if config.dataset.own_labels:
        return _prepare_dataset(config)
    root = dataset_root(config)
    task = get_task(config.task)
    refs = [
        r for r in discover_cases(root) if r.mask_dir is not None and r.modality in task.modalities
    ]
    if not refs:
        wanted = [m.value for m in task.modalities]
        raise DataError(f"{root}: no labelled cases of CHAOS task {task.number} ({wanted}) found")
    cache = SliceCache.build(refs, config.cache_dir(), config.preprocess, list(task.organs))
    train_ids, val_ids = patient_split(
        cache.samples, val_fraction=config.dataset.val_fraction, seed=config.dataset.split_seed
    )
    if not val_ids:
        # One patient cannot be split by patient; validate on the training data rather than not at all.
        warnings.warn(
            DataWarning(
                f"{root}: a single patient; validation Dice is measured on the training patient"
            ),
            stacklevel=2,
        )
        val_ids = list(train_ids)
    return PreparedData(root=root, cache=cache, train_ids=list(train_ids), val_ids=list(val_ids))
