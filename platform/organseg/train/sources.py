"""Where a member's training batches and validation predictions come from: slices (2D) or patches (3D).

The trainer core asks its source for the network, the training dataset/loader and a validation pass;
everything else (optimiser, scheduler, epochs, checkpoints) is shared by 2D and 3D members.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from organseg.config import MemberConfig
from organseg.models import create_member
from organseg.preprocess.augment import SliceAugmenter
from organseg.preprocess.channels import to_channels
from organseg.preprocess.dataset import SliceCache, SliceDataset
from organseg.train.steps import StepFn
from organseg.train.validation import validate

if TYPE_CHECKING:
    from organseg.train.payload import TrainPayload


class TrainingSource(Protocol):
    """What the trainer core needs from a member's data and architecture family."""

    def build_model(self) -> nn.Module: ...

    def make_step(
        self, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer
    ) -> StepFn | None:
        """A member-specific optimisation step, or None for the shared plain/adversarial steps."""
        ...

    def train_dataset(self) -> Any: ...

    def train_loader(
        self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False
    ) -> DataLoader:
        """Batches for training; ``num_workers`` processes prepare them off the training thread."""
        ...

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, device: torch.device
    ) -> dict[str, float]: ...


def collate_slices(
    batch: list[tuple[torch.Tensor, torch.Tensor]], in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a batch, adapting each sample's channels (grey, T1 in+out) to what the member expects."""
    images = torch.stack([to_channels(x[None], in_channels)[0] for x, _ in batch])
    targets = torch.stack([y for _, y in batch])
    return images, targets


class SliceSource:
    """2D members: slices of the shared slice cache, validated slice by slice on whole patients."""

    def __init__(self, member: MemberConfig, payload: TrainPayload) -> None:
        self.member, self.payload = member, payload
        self.cache = SliceCache.open(Path(payload.cache_dir))

    def build_model(self) -> nn.Module:
        member = self.member
        return create_member(
            member.arch,
            member.in_channels,
            len(self.payload.organs),
            encoder_weights=member.encoder_weights,
            **member.kwargs,
        )

    def make_step(self, model: nn.Module, loss_fn: nn.Module, optimizer: Any) -> StepFn | None:
        return None

    def train_dataset(self) -> SliceDataset:
        augment = self.payload.augment
        return SliceDataset(
            self.cache,
            self.payload.train_ids,
            self.payload.organs,
            augment=SliceAugmenter(augment) if augment.enabled else None,
            seed=self.member.seed,
            only_labelled_slices=not self.member.empty_slices,
        )

    #: Batches each loader worker keeps ready. Workers are not persistent, so each epoch's workers see
    #: the dataset's new epoch (its augmentation seeds) after set_epoch.
    prefetch_factor = 4

    def collate_fn(self) -> Any:
        """How a batch of samples becomes tensors (``None``: PyTorch's default stacking)."""
        return partial(collate_slices, in_channels=self.member.in_channels)

    def train_loader(
        self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False
    ) -> DataLoader:
        """Shuffled, seeded batches; ``num_workers`` > 0 prepares them off the training thread."""
        member = self.member
        return DataLoader(
            dataset,
            batch_size=member.batch_size,
            shuffle=True,
            drop_last=len(dataset) > member.batch_size,  # type: ignore[arg-type]
            collate_fn=self.collate_fn(),
            generator=torch.Generator().manual_seed(member.seed),
            num_workers=num_workers,
            pin_memory=pin_memory,
            **({"prefetch_factor": self.prefetch_factor} if num_workers > 0 else {}),
        )

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, device: torch.device
    ) -> dict[str, float]:
        volumes = (self.cache.volume(sample_id) for sample_id in self.payload.val_ids)
        return validate(
            model,
            volumes,
            self.payload.organs,
            self.member.in_channels,
            device,
            loss_fn,
            values=[self.cache.label_values[o] for o in self.payload.organs],
            ignore=self.cache.ignore,
        )


class PatchSource(SliceSource):
    """3D members: foreground-oversampled patches of the volume cache (the slice cache resampled once to
    the member's spacing), validated with the sliding window on whole patients at that spacing."""

    def __init__(self, member: MemberConfig, payload: TrainPayload) -> None:
        super().__init__(member, payload)
        from organseg.preprocess.volumes import VolumeCache

        assert member.volume is not None  # set for every 3D member by MemberConfig
        self.cfg = member.volume
        ids = list(dict.fromkeys([*payload.train_ids, *payload.val_ids]))
        self.volumes = VolumeCache.build(self.cache, ids, self.cfg.spacing)

    def train_dataset(self) -> Any:
        from organseg.preprocess.volumes import PatchDataset

        return PatchDataset(
            self.volumes,
            self.payload.train_ids,
            self.payload.organs,
            self.cfg,
            self.member.in_channels,
            seed=self.member.seed,
        )

    prefetch_factor = 2  # patches cost more than slices

    def collate_fn(self) -> Any:
        return None

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, device: torch.device
    ) -> dict[str, float]:
        from organseg.ensemble.sliding import sliding_window_probs
        from organseg.preprocess.volumes import volume_channels
        from organseg.train.validation import dice_3d

        organs = self.payload.organs
        hard: dict[str, list[float]] = {o: [] for o in organs}
        for sample_id in self.payload.val_ids:
            image, labels, _ = self.volumes.volume(sample_id)
            x = self.volumes.normalise(
                sample_id, torch.from_numpy(np.asarray(image, dtype=np.float32)), self.cfg.intensity
            )
            x = volume_channels(x, self.member.in_channels)
            probs = sliding_window_probs(
                model, x, self.cfg.patch, self.cfg.overlap, False, self.cfg.window_batch_size
            ).numpy()
            keep = (
                None if self.volumes.ignore is None else np.asarray(labels) != self.volumes.ignore
            )
            for k, organ in enumerate(organs):
                truth = np.asarray(labels) == self.volumes.label_values[organ]
                pred = probs[k] >= 0.5
                if keep is not None:  # the ignore label's voxels count in no Dice
                    pred &= keep
                hard[organ].append(dice_3d(pred, truth))
        metrics = {f"val_dice_{o}": float(np.mean(v)) if v else 0.0 for o, v in hard.items()}
        metrics["val_dice"] = float(np.mean(list(metrics.values()))) if metrics else 0.0
        return metrics


def source_for(member: MemberConfig, payload: TrainPayload) -> TrainingSource:
    """The data source that fits the member's architecture: slices for 2D nets, patches for 3D ones."""
    return PatchSource(member, payload) if member.dims == 3 else SliceSource(member, payload)
