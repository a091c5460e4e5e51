"""From an experiment config to a ready slice cache and a patient-level train/validation split."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from organseg.config import ExperimentConfig, MemberConfig
from organseg.errors import DataError, DataWarning
from organseg.io import discover_cases
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


def prepare_data(config: ExperimentConfig) -> PreparedData:
    """Discover the task's labelled cases, build (or reuse) the slice cache and split by patient."""
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
