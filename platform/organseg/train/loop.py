"""Ray Train glue for one ensemble member: run the trainer core, report and checkpoint each epoch.

The work itself (build, restore, one epoch, validate, state) is :class:`organseg.train.core.MemberTrainer`,
which runs without Ray; this module only hands it the worker's device, DDP wrappers and the checkpoint to
resume from, and reports each epoch's metrics with a checkpoint attached on rank 0 (which also writes them
to TensorBoard and MLflow, :mod:`organseg.train.tracking`). A restarted or resumed run continues from the
epoch after its latest checkpoint.
"""

from __future__ import annotations

import math
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from organseg.train.core import (
    MEMBER_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    EpochResult,
    MemberTrainer,
    Placement,
    TrainPayload,
    load_state,
)
from organseg.train.tracking import EpochLog, TrackingPlan

__all__ = ["MEMBER_FILE", "STATE_FILE", "WEIGHTS_FILE", "TrainPayload", "train_member_loop"]


def train_member_loop(config: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_per_worker``)."""
    payload: TrainPayload = config["payload"]  # validated where the run was planned
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, math.floor(payload.member.cpus_per_worker)))
    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = load_state(Path(folder))
    placement = Placement(
        rank=rank,
        world=world,
        device=device,
        prepare_model=ray.train.torch.prepare_model,
        prepare_loader=ray.train.torch.prepare_data_loader,
        broadcast=partial(_broadcast, world=world, device=device),
    )
    trainer = MemberTrainer(payload, placement, state)
    tracking = TrackingPlan.of(payload.extra) if rank == 0 else None
    epoch_log = EpochLog(tracking, trainer.history) if tracking is not None else None
    try:
        for epoch in trainer.epochs():
            result = trainer.run_epoch(epoch)
            report(trainer, result)
            if epoch_log is not None:  # after the checkpoint is stored: a restart resumes past it
                epoch_log.log_epoch(result.epoch, result.metrics)
    finally:
        if epoch_log is not None:
            epoch_log.close()


def _broadcast(value: float, world: int, device: torch.device) -> float:
    """Rank 0's validation Dice on every rank, so all schedulers take the same step."""
    if world == 1:
        return float(value)
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.broadcast(tensor, src=0)
    return float(tensor.item())


def report(trainer: MemberTrainer, result: EpochResult) -> None:
    """Every rank reports (it is a barrier); only rank 0 attaches the checkpoint."""
    if trainer.place.rank != 0:
        ray.train.report(result.metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        trainer.write_checkpoint(Path(folder), result)
        ray.train.report(
            result.metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=f"epoch-{result.epoch:04d}",
        )
