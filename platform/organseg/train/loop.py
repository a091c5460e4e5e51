"""The per-worker training loop that Ray Train runs for one ensemble member.

Each epoch: train over the member's slices, validate on whole validation patients (rank 0), step the
plateau scheduler, save a checkpoint (weights + optimiser state + config + preprocessing + metrics) and
report. A restarted or resumed run continues from the epoch after its latest checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader

from organseg.config import MemberConfig
from organseg.models import create_member
from organseg.preprocess.augment import AugmentConfig, SliceAugmenter
from organseg.preprocess.channels import to_channels
from organseg.preprocess.dataset import SliceCache, SliceDataset
from organseg.train.steps import AdversarialParts, adversarial_step, plain_step, unwrap
from organseg.train.validation import validate

STATE_FILE = "state.pt"  # full training state, for resuming
WEIGHTS_FILE = "model.pt"  # inference weights only, what the model directory ships
MEMBER_FILE = "member.json"  # member config, organs, preprocessing and metrics at this epoch


@dataclass
class TrainPayload:
    """Everything a worker needs, as plain data (it travels to every Ray worker)."""

    member: dict[str, Any]
    organs: list[str]
    preprocess: dict[str, Any]
    augment: dict[str, Any]
    cache_dir: str
    train_ids: list[str]
    val_ids: list[str]
    fault_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]], in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a batch, adapting each sample's channels (grey, T1 in+out) to what the member expects."""
    images = torch.stack([to_channels(x[None], in_channels)[0] for x, _ in batch])
    targets = torch.stack([y for _, y in batch])
    return images, targets


def _optimizer(member: MemberConfig, params: Any) -> torch.optim.Optimizer:
    opt = member.optimizer
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=0.9, weight_decay=opt.weight_decay)


def _inject_faults(member: MemberConfig, epoch: int, fault_dir: str | None) -> None:
    fault = member.fault
    if fault is None:
        return
    if fault.fail_at_epoch is not None and epoch >= fault.fail_at_epoch:
        raise RuntimeError(f"fault injection: member {member.name!r} fails at epoch {epoch}")
    if fault.crash_once_at_epoch == epoch and fault_dir:
        marker = Path(fault_dir) / f"{member.name}.crashed"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(epoch))
            os._exit(17)  # a hard worker death, not an exception: what FailureConfig must survive


def train_member_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_per_worker``)."""
    worker_started_at = time.time()
    payload = TrainPayload(**config)
    member = MemberConfig.model_validate(payload.member)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(member.seed + rank)
    np.random.seed(member.seed + rank)
    torch.set_num_threads(max(1, math.floor(member.cpus_per_worker)))
    device = ray.train.torch.get_device()
    organs = payload.organs

    model = create_member(
        member.arch,
        member.in_channels,
        len(organs),
        encoder_weights=member.encoder_weights,
        **member.kwargs,
    )
    adversarial = None
    if member.adversarial.enabled:
        discriminator = create_member("patch_discriminator", member.in_channels + len(organs), 1)
    start_epoch, history, best = 0, [], -1.0
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        start_epoch, history, best = state["epoch"] + 1, state["history"], state["best"]
        if member.adversarial.enabled:
            discriminator.load_state_dict(state["discriminator"])

    model = ray.train.torch.prepare_model(model)
    optimizer = _optimizer(member, model.parameters())
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=member.scheduler.factor,
        patience=member.scheduler.patience,
        min_lr=member.scheduler.min_lr,
    )
    if member.adversarial.enabled:
        discriminator = ray.train.torch.prepare_model(discriminator)
        adversarial = AdversarialParts(
            discriminator,
            torch.optim.Adam(
                discriminator.parameters(),
                lr=member.adversarial.discriminator_lr,
                betas=(0.5, 0.999),
            ),
            member.adversarial.lam,
        )
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if adversarial is not None:
            adversarial.optimizer.load_state_dict(state["discriminator_optimizer"])

    from organseg.losses import build_loss

    loss_fn = build_loss(member.resolved_loss(), member.dice_weight)
    step = (
        adversarial_step(model, loss_fn, optimizer, adversarial)
        if adversarial is not None
        else plain_step(model, loss_fn, optimizer)
    )

    cache = SliceCache.open(Path(payload.cache_dir))
    augment_cfg = AugmentConfig.model_validate(payload.augment)
    dataset = SliceDataset(
        cache,
        payload.train_ids,
        organs,
        augment=SliceAugmenter(augment_cfg) if augment_cfg.enabled else None,
        seed=member.seed,
        only_labelled_slices=not member.empty_slices,
    )
    loader = DataLoader(
        dataset,
        batch_size=member.batch_size,
        shuffle=True,
        drop_last=len(dataset) > member.batch_size,
        collate_fn=partial(_collate, in_channels=member.in_channels),
        generator=torch.Generator().manual_seed(member.seed),
    )
    loader = ray.train.torch.prepare_data_loader(loader)

    for epoch in range(start_epoch, member.epochs):
        _inject_faults(member, epoch, payload.fault_dir)
        started = time.perf_counter()
        dataset.set_epoch(epoch)
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        losses, seen = [], 0
        for index, (x, y) in enumerate(loader):
            if member.steps_per_epoch is not None and index >= member.steps_per_epoch:
                break
            losses.append(step(x.to(device), y.to(device)))
            seen += x.shape[0]
        train_time = time.perf_counter() - started

        metrics: dict[str, float] = {}
        if rank == 0:
            volumes = (cache.volume(sample_id) for sample_id in payload.val_ids)
            metrics = validate(unwrap(model), volumes, organs, member.in_channels, device, loss_fn)
        val_dice = _broadcast(metrics.get("val_dice", 0.0), world, device)
        scheduler.step(val_dice)
        best = max(best, val_dice)
        metrics.update(
            epoch=epoch,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            lr=optimizer.param_groups[0]["lr"],
            train_slices_per_s=seen * world / max(train_time, 1e-9),
            epoch_time_s=time.perf_counter() - started,
            best_val_dice=best,
            epochs=member.epochs,
            start_epoch=start_epoch,  # > 0 after a resume or a restart from a checkpoint
            world_size=world,
            worker_started_at=worker_started_at,
            finished_at=time.time(),
        )
        history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        _report(
            rank,
            epoch,
            metrics,
            history,
            best,
            model,
            optimizer,
            scheduler,
            adversarial,
            member,
            payload,
        )


def _broadcast(value: float, world: int, device: torch.device) -> float:
    """Rank 0's validation Dice on every rank, so all schedulers take the same step."""
    if world == 1:
        return float(value)
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return float(tensor.item())


def _report(
    rank: int,
    epoch: int,
    metrics: dict[str, float],
    history: list[dict[str, float]],
    best: float,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    adversarial: AdversarialParts | None,
    member: MemberConfig,
    payload: TrainPayload,
) -> None:
    """Every rank reports (it is a barrier); only rank 0 attaches the checkpoint."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        state = {
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "history": history,
            "best": best,
        }
        if adversarial is not None:
            state["discriminator"] = unwrap(adversarial.discriminator).state_dict()
            state["discriminator_optimizer"] = adversarial.optimizer.state_dict()
        torch.save(state, Path(folder) / STATE_FILE)
        torch.save(unwrap(model).state_dict(), Path(folder) / WEIGHTS_FILE)
        description = {
            "member": member.model_dump(mode="json", exclude={"fault"}),
            "organs": payload.organs,
            "preprocess": payload.preprocess,
            "metrics": metrics,
            "epoch": epoch,
            "history": history,
        }
        (Path(folder) / MEMBER_FILE).write_text(json.dumps(description, indent=2))
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"epoch-{epoch:04d}",
        )
