"""Where a member's training batches and validation predictions come from: slices (2D) or patches (3D).

The trainer core asks its source for the network, the training dataset/loader and a validation pass;
everything else (optimiser, scheduler, epochs, checkpoints) is shared by 2D and 3D members.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from organseg.config import MemberConfig
from organseg.models import create_member
from organseg.preprocess.augment import AugmentConfig, SliceAugmenter
from organseg.preprocess.channels import to_channels
from organseg.preprocess.dataset import SliceCache, SliceDataset
from organseg.train.steps import StepFn
from organseg.train.validation import validate

if TYPE_CHECKING:
    from organseg.train.core import TrainPayload


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
        augment = AugmentConfig.model_validate(self.payload.augment)
        return SliceDataset(
            self.cache,
            self.payload.train_ids,
            self.payload.organs,
            augment=SliceAugmenter(augment) if augment.enabled else None,
            seed=self.member.seed,
            only_labelled_slices=not self.member.empty_slices,
        )

    def train_loader(
        self, dataset: Dataset, num_workers: int = 0, pin_memory: bool = False
    ) -> DataLoader:
        member = self.member
        extra: dict[str, Any] = {}
        if num_workers > 0:
            # a few batches ready per worker; workers are not persistent, so each epoch's workers see
            # the dataset's new epoch (its augmentation seeds) after set_epoch
            extra = {"prefetch_factor": 4}
        return DataLoader(
            dataset,
            batch_size=member.batch_size,
            shuffle=True,
            drop_last=len(dataset) > member.batch_size,  # type: ignore[arg-type]
            collate_fn=partial(collate_slices, in_channels=member.in_channels),
            generator=torch.Generator().manual_seed(member.seed),
            num_workers=num_workers,
            pin_memory=pin_memory,
            **extra,
        )

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, device: torch.device
    ) -> dict[str, float]:
        volumes = (self.cache.volume(sample_id) for sample_id in self.payload.val_ids)
        return validate(
            model, volumes, self.payload.organs, self.member.in_channels, device, loss_fn
        )


def source_for(member: MemberConfig, payload: TrainPayload) -> TrainingSource:
    """The data source that fits the member's architecture (slices for 2D nets)."""
    return SliceSource(member, payload)
