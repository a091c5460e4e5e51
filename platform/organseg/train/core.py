"""The Ray-free trainer core of one ensemble member: build, restore, run one epoch, validate, state.

Everything here runs in a plain process (a test drives it without Ray); :mod:`organseg.train.loop`
is the thin Ray Train glue that hands it a device, DDP wrappers and a checkpoint, and reports what
each epoch returns. The same core trains 2D members on slices and 3D members on patches: only the data
source and the validation predictor differ (see :mod:`organseg.train.sources`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from organseg.config import MemberConfig
from organseg.ensemble.spec import MEMBER_FILE, WEIGHTS_FILE
from organseg.losses import build_loss
from organseg.models import create_member
from organseg.train.payload import TrainPayload
from organseg.train.sources import TrainingSource, source_for
from organseg.train.steps import (
    AdversarialParts,
    Precision,
    StepFn,
    StepLosses,
    adversarial_step,
    plain_step,
    unwrap,
)

STATE_FILE = "state.pt"  # full training state, for resuming

ModelWrapper = Callable[[nn.Module], nn.Module]
LoaderWrapper = Callable[[DataLoader], Any]
Broadcast = Callable[[float], float]


def _identity(value: Any) -> Any:
    return value


@dataclass
class Placement:
    """Where this trainer runs and how the distributed runtime wraps its parts (identity without Ray)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepare_model: ModelWrapper = _identity
    prepare_loader: LoaderWrapper = _identity
    #: Rank 0's value on every rank (all schedulers must step alike); identity on one worker.
    broadcast: Broadcast = float


@dataclass
class EpochResult:
    """What one epoch produced: the metrics to report and the history/best they extend."""

    epoch: int
    metrics: dict[str, float]
    history: list[dict[str, float]]
    best: float


def build_optimizer(member: MemberConfig, params: Any) -> torch.optim.Optimizer:
    """The member's optimizer (adam, adamw, or sgd with its momentum / Nesterov) over ``params``."""
    opt = member.optimizer
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(
        params,
        lr=opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov and opt.momentum > 0,
        weight_decay=opt.weight_decay,
    )


def build_scheduler(member: MemberConfig, optimizer: torch.optim.Optimizer) -> Any:
    """Plateau on validation Dice (the 2D seeds), fixed milestones (e.g. ×0.1 at epochs 7 and 9), or
    nnU-Net's polynomial decay over the member's epochs (stepped once per epoch)."""
    cfg = member.scheduler
    if cfg.poly_exponent is not None:
        return torch.optim.lr_scheduler.PolynomialLR(
            optimizer, total_iters=member.epochs, power=cfg.poly_exponent
        )
    if cfg.milestones:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, gamma=cfg.factor)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr
    )


def epoch_losses(steps: list[StepLosses]) -> dict[str, float]:
    """An epoch's mean losses: ``train_loss`` (the total each step optimised) and ``train_loss_<term>``
    per named term (``train_loss_dice``, ``train_loss_discriminator`` …)."""
    if not steps:
        return {"train_loss": float("nan")}
    means = {"train_loss": float(np.mean([s.total for s in steps]))}
    for name in steps[0].named():
        means[f"train_loss_{name}"] = float(np.mean([s.named()[name] for s in steps]))
    return means


def inject_faults(member: MemberConfig, epoch: int, fault_dir: str | None) -> None:
    """Deliberate failures configured by ``member.fault`` (fault-tolerance tests only)."""
    fault = member.fault
    if fault is None:
        return
    if fault.fail_at_epoch is not None and epoch >= fault.fail_at_epoch:
        raise RuntimeError(f"fault injection: member {member.name!r} fails at epoch {epoch}")
    if fault.crash_once_at_epoch == epoch and fault_dir:
        marker = Path(fault_dir) / f"{member.name}.crashed"
        if not marker.exists():
            if epoch > 0:
                # Ray Train's controller registers a reported checkpoint a moment after ``report``
                # returns; crashing before it has done so would make the restart's starting point
                # a race. Wait for the previous epoch's checkpoint so the test of resuming is exact.
                _wait_for_registered_checkpoint(Path(fault_dir).parent / member.name, epoch - 1)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(epoch))
            os._exit(17)  # a hard worker death, not an exception: what FailureConfig must survive


def _wait_for_registered_checkpoint(run_dir: Path, epoch: int, timeout_s: float = 60.0) -> None:
    """Block until Ray Train's run snapshot in ``run_dir`` lists a checkpoint of ``epoch`` or later."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            if int(latest["checkpoint_dir_name"].split("-")[1]) >= epoch:
                return
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass  # not written yet, or being replaced
        time.sleep(0.1)
    raise RuntimeError(
        f"fault injection: no checkpoint of epoch {epoch} registered in {timeout_s:g} s"
    )


def loader_options(member: MemberConfig, device: torch.device) -> dict[str, Any]:
    """DataLoader workers and pinned memory: batches are read and augmented in other processes while
    the GPU trains; on CPU the worker's own CPUs train, so batches stay in-process unless asked."""
    cuda = device.type == "cuda"
    workers = member.loader_workers
    if workers is None:
        workers = max(1, int(member.cpus_per_worker) - 1) if cuda else 0
    return {"num_workers": workers, "pin_memory": cuda}


class MemberTrainer:
    """One member's model, optimiser, scheduler, data and loss; steps epochs and snapshots its state."""

    def __init__(
        self,
        payload: TrainPayload,
        placement: Placement | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.payload = payload
        self.member = payload.member
        self.place = placement or Placement()
        self.started_at = time.time()
        member, place = self.member, self.place
        torch.manual_seed(member.seed + place.rank)
        np.random.seed(member.seed + place.rank)

        self.source: TrainingSource = source_for(member, payload)
        model = self.source.build_model()
        discriminator = None
        if member.adversarial.enabled:
            discriminator = create_member(
                "patch_discriminator", member.in_channels + len(payload.organs), 1
            )
        self.start_epoch, self.history, self.best = 0, [], -1.0
        if state is not None:
            model.load_state_dict(state["model"])
            self.start_epoch, self.history, self.best = (
                state["epoch"] + 1,
                state["history"],
                state["best"],
            )
            if discriminator is not None:
                discriminator.load_state_dict(state["discriminator"])

        self.precision = Precision.for_device(member.precision, place.device)
        self.channels_last = place.device.type == "cuda"
        if self.channels_last:
            # NHWC convolutions are what tensor cores run natively; fixed slice shapes let cuDNN
            # benchmark its algorithms once and keep the fastest
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        self.model = place.prepare_model(model.to(place.device))
        self.optimizer = build_optimizer(member, self.model.parameters())
        self.scheduler = build_scheduler(member, self.optimizer)
        self.adversarial: AdversarialParts | None = None
        if discriminator is not None:
            discriminator = place.prepare_model(discriminator.to(place.device))
            self.adversarial = AdversarialParts(
                discriminator,
                torch.optim.Adam(
                    discriminator.parameters(),
                    lr=member.adversarial.discriminator_lr,
                    betas=(0.5, 0.999),
                ),
                member.adversarial.lam,
            )
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.adversarial is not None:
                self.adversarial.optimizer.load_state_dict(state["discriminator_optimizer"])

        self.loss_fn = build_loss(member.resolved_loss(), member.dice_weight)
        self.step: StepFn = self.source.make_step(self.model, self.loss_fn, self.optimizer) or (
            adversarial_step(
                self.model, self.loss_fn, self.optimizer, self.adversarial, self.precision
            )
            if self.adversarial is not None
            else plain_step(self.model, self.loss_fn, self.optimizer, self.precision)
        )
        self.dataset = self.source.train_dataset()
        self.loader = place.prepare_loader(
            self.source.train_loader(self.dataset, **loader_options(member, place.device))
        )
        self.data_wait_s = 0.0

    # -- epochs ----------------------------------------------------------------------------------
    def epochs(self) -> Iterator[int]:
        """The epochs still to run (after a restore, from the one after the checkpoint)."""
        return iter(range(self.start_epoch, self.member.epochs))

    def train_epoch(self, epoch: int) -> tuple[list[StepLosses], int]:
        """One pass over the training data (capped at ``steps_per_epoch``): each step's losses and the
        samples seen."""
        self.dataset.set_epoch(epoch)
        sampler = getattr(self.loader, "sampler", None)
        if self.place.world > 1 and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        self.model.train()
        losses, seen = [], 0
        device = self.place.device
        memory = torch.channels_last if self.channels_last else torch.preserve_format
        self.data_wait_s = 0.0  # time the step waited for the loader (≈ 0 when it keeps up)
        batches = iter(self.loader)
        index = 0
        while self.member.steps_per_epoch is None or index < self.member.steps_per_epoch:
            waited = time.perf_counter()
            try:
                x, y = next(batches)
            except StopIteration:
                break
            self.data_wait_s += time.perf_counter() - waited
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory)
            losses.append(self.step(x, y.to(device, non_blocking=True)))
            seen += x.shape[0]
            index += 1
        return losses, seen

    def validate(self) -> dict[str, float]:
        """Validation metrics on whole patients (``val_dice`` is the selection metric)."""
        return self.source.validate(unwrap(self.model), self.loss_fn, self.place.device)

    def run_epoch(self, epoch: int) -> EpochResult:
        """Train, validate (rank 0), step the scheduler and extend the history."""
        inject_faults(self.member, epoch, self.payload.fault_dir)
        started = time.perf_counter()
        losses, seen = self.train_epoch(epoch)
        train_time = time.perf_counter() - started
        metrics: dict[str, float] = self.validate() if self.place.rank == 0 else {}
        val_dice = self.place.broadcast(metrics.get("val_dice", 0.0))
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_dice)
        else:
            self.scheduler.step()
        self.best = max(self.best, val_dice)
        world = self.place.world
        metrics.update(
            epoch=epoch,
            **epoch_losses(losses),
            lr=self.optimizer.param_groups[0]["lr"],
            train_slices_per_s=seen * world / max(train_time, 1e-9),
            # share of the training time spent waiting for batches: the loader's throughput against
            # what the member consumes (near 0: the loader keeps up; near 1: the GPU waits for the CPU)
            data_wait_fraction=self.data_wait_s / max(train_time, 1e-9),
            precision=self.precision.name,
            epoch_time_s=time.perf_counter() - started,
            best_val_dice=self.best,
            epochs=self.member.epochs,
            start_epoch=self.start_epoch,  # > 0 after a resume or a restart from a checkpoint
            world_size=world,
            worker_started_at=self.started_at,
            finished_at=time.time(),
        )
        self.history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return EpochResult(epoch, metrics, self.history, self.best)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        """Everything a restart needs to continue after ``epoch``."""
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "history": self.history,
            "best": self.best,
        }
        if self.adversarial is not None:
            state["discriminator"] = unwrap(self.adversarial.discriminator).state_dict()
            state["discriminator_optimizer"] = self.adversarial.optimizer.state_dict()
        return state

    def write_checkpoint(self, folder: Path, result: EpochResult) -> None:
        """State for resuming, inference weights, and the member description, into ``folder``."""
        torch.save(self.state_dict(result.epoch), folder / STATE_FILE)
        torch.save(unwrap(self.model).state_dict(), folder / WEIGHTS_FILE)
        description = {
            "member": self.member.model_dump(mode="json", exclude={"fault"}),
            "organs": self.payload.organs,
            "preprocess": self.payload.preprocess.model_dump(mode="json"),
            "metrics": result.metrics,
            "epoch": result.epoch,
            "history": result.history,
        }
        (folder / MEMBER_FILE).write_text(json.dumps(description, indent=2))


def load_state(folder: Path) -> dict[str, Any]:
    """The training state saved by :meth:`MemberTrainer.write_checkpoint`."""
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
