"""One optimisation step per training mode (plain, cascade, cGAN), kept apart from the Ray plumbing.

The per-worker loop picks a step function once; each step takes a batch and returns its losses by name
(:class:`StepLosses`: the total it optimised and the terms that make it up), so the loop itself does
not branch on the mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from organseg.losses import discriminator_loss, generator_terms, loss_terms, sum_terms


@dataclass(frozen=True)
class StepLosses:
    """One step's losses by name.

    ``total`` is the value the step optimised (the generator's loss for a cGAN), the one ``train_loss``
    averages; ``terms`` are its weighted parts and add up to it (to float rounding). ``apart`` holds
    losses optimised alongside by another optimiser (the cGAN discriminator's), not part of ``total``.
    """

    total: float
    terms: dict[str, float]
    apart: dict[str, float] = field(default_factory=dict)

    def named(self) -> dict[str, float]:
        """Every term and separate loss by name (what training reports per term)."""
        return {**self.terms, **self.apart}


def step_losses(
    total: torch.Tensor,
    terms: dict[str, torch.Tensor],
    apart: dict[str, torch.Tensor] | None = None,
) -> StepLosses:
    """Tensors to floats in one device transfer (one synchronisation per step, as for the total alone)."""
    apart = apart or {}
    tensors = [total, *terms.values(), *apart.values()]
    values = torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist()
    n = len(terms)
    return StepLosses(
        values[0],
        dict(zip(terms, values[1 : n + 1], strict=True)),
        dict(zip(apart, values[n + 1 :], strict=True)),
    )


StepFn = Callable[[torch.Tensor, torch.Tensor], StepLosses]
#: A loss's named, weighted terms as tensors (:func:`organseg.losses.loss_terms`).
Terms = dict[str, torch.Tensor]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def training_precision(precision: str | None, device: torch.device) -> str:
    """``precision`` checked against ``device``, or its default: bf16 on GPUs that have it (Ampere and
    later: no loss scaling needed), fp16 on older GPUs, fp32 on CPU."""
    from organseg.errors import ConfigError

    if precision is None:
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a GPU (use bf16 or fp32 on CPU)")
    return precision


@dataclass
class Precision:
    """Mixed precision for one trainer: autocast for the forward pass, loss scaling for fp16."""

    name: str = "fp32"
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def for_device(cls, precision: str | None, device: torch.device) -> Precision:
        name = training_precision(precision, device)
        scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        return cls(name, device.type, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per iteration, after every optimizer stepped (adjusts the fp16 loss scale)."""
        if self.scaler is not None:
            self.scaler.update()


FP32 = Precision()


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel wrapper (checkpoints store the bare weights)."""
    return model.module if hasattr(model, "module") else model


def supervised_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: Precision = FP32,
) -> torch.Tensor:
    """Segmentation loss; a cascade is supervised at both stages (auto-context deep supervision)."""
    return supervised_terms(model, loss_fn, x, y, precision)[0]


def supervised_terms(
    model: nn.Module,
    loss_fn: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: Precision = FP32,
) -> tuple[torch.Tensor, Terms]:
    """:func:`supervised_loss` and its weighted terms (detached; a cascade's named per stage).

    The forward pass runs under ``precision``'s autocast; the loss is computed in fp32 (Dice sums over
    whole batches lose too many digits in half precision).
    """
    inner = unwrap(model)
    if hasattr(inner, "forward_stages"):
        with precision.autocast():
            stage1, stage2 = inner.forward_stages(x) if inner is model else _ddp_stages(model, x)
        first = loss_terms(loss_fn, stage1.float(), y)
        second = loss_terms(loss_fn, stage2.float(), y)
        terms = {f"stage1_{k}": 0.5 * v.detach() for k, v in first.items()}
        terms.update({f"stage2_{k}": v.detach() for k, v in second.items()})
        return 0.5 * sum_terms(first) + sum_terms(second), terms
    with precision.autocast():
        out = model(x)
    if isinstance(out, (list, tuple)):
        return deep_supervision_terms(loss_fn, [o.float() for o in out], y)
    terms = loss_terms(loss_fn, out.float(), y)
    return sum_terms(terms), {k: v.detach() for k, v in terms.items()}


def deep_supervision_loss(
    loss_fn: nn.Module, outputs: list[torch.Tensor], y: torch.Tensor
) -> torch.Tensor:
    """nnU-Net's deep supervision: full-resolution logits first, each coarser output against the target
    downsampled (nearest) to its size, weights halving per level and normalised to sum to one."""
    return deep_supervision_terms(loss_fn, outputs, y)[0]


def deep_supervision_terms(
    loss_fn: nn.Module, outputs: list[torch.Tensor], y: torch.Tensor
) -> tuple[torch.Tensor, Terms]:
    """:func:`deep_supervision_loss` and its terms, each summed over the levels with their weights."""
    weights = [0.5**i for i in range(len(outputs))]
    total = sum(weights)
    loss = outputs[0].new_zeros(())
    summed: Terms = {}
    for weight, out in zip(weights, outputs, strict=True):
        target = y if out.shape[2:] == y.shape[2:] else F.interpolate(y, size=out.shape[2:])
        terms = loss_terms(loss_fn, out, target)
        loss = loss + (weight / total) * sum_terms(terms)
        for key, value in terms.items():
            part = (weight / total) * value.detach()
            summed[key] = summed[key] + part if key in summed else part
    return loss, summed


def _ddp_stages(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # DDP only hooks forward(); run the final output through it so gradients synchronise, and take
    # stage one from the bare module (its parameters are part of the same graph).
    final = model(x)
    stage1, _ = unwrap(model).forward_stages(x)
    return stage1, final


def plain_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision = FP32,
) -> StepFn:
    if hasattr(unwrap(model), "loss_terms"):
        return partitioned_step(model, loss_fn, optimizer, precision)

    def step(x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        optimizer.zero_grad(set_to_none=True)
        loss, terms = supervised_terms(model, loss_fn, x, y, precision)
        precision.backward(loss)
        precision.step(optimizer)
        precision.update()
        return step_losses(loss, terms)

    return step


def partitioned_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    precision: Precision = FP32,
) -> StepFn:
    """Each of the model's loss terms moves only its own parameters (IRE3D-Net's separate optimisation).

    Every term's gradient is taken with respect to its parameters alone and written to their ``.grad``;
    one optimiser step then applies them (Adam skips parameters without a gradient), so the scheduler
    and checkpoints stay the trainer's usual ones. Gradients bypass DDP's hooks (one worker only) and
    fp16 loss scaling (fp32 or bf16 only).
    """
    inner = unwrap(model)
    if inner is not model:
        raise ValueError(
            f"{type(inner).__name__} optimises its losses separately and trains on one worker "
            "(num_workers: 1)"
        )
    if precision.scaler is not None:
        raise ValueError(f"{type(inner).__name__} trains in fp32 or bf16, not fp16")

    def step(x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            terms = inner.loss_terms(x, y, loss_fn)
        for _, loss, params in terms:
            grads = torch.autograd.grad(loss.float(), params, retain_graph=True, allow_unused=True)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
        optimizer.step()
        values = torch.stack([loss.detach().float() for _, loss, _ in terms]).tolist()
        named = {name: value for (name, _, _), value in zip(terms, values, strict=True)}
        # each term moves its own parameters; the total is their sum (in float64, as it always was)
        return StepLosses(float(sum(named.values())), named)

    return step


@dataclass
class AdversarialParts:
    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    lam: float


def adversarial_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    adv: AdversarialParts,
    precision: Precision = FP32,
) -> StepFn:
    """cGAN: update D on (image ⊕ truth) vs (image ⊕ prediction), then G on −log D(x, G(x)) + λ·seg loss."""

    def step(x: torch.Tensor, y: torch.Tensor) -> StepLosses:
        with precision.autocast():
            logits = model(x)
        logits = logits.float()
        fake = torch.cat([x.float(), torch.sigmoid(logits)], dim=1)
        real = torch.cat([x.float(), y], dim=1)

        adv.optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            d_real, d_fake = adv.discriminator(real), adv.discriminator(fake.detach())
        d_loss = discriminator_loss(d_real.float(), d_fake.float())
        precision.backward(d_loss)
        precision.step(adv.optimizer)

        optimizer.zero_grad(set_to_none=True)
        for p in adv.discriminator.parameters():
            p.requires_grad_(False)
        with precision.autocast():
            d_on_fake = adv.discriminator(fake)
        g_terms = generator_terms(d_on_fake.float(), loss_fn(logits, y), adv.lam)
        g_loss = sum_terms(g_terms)
        precision.backward(g_loss)
        for p in adv.discriminator.parameters():
            p.requires_grad_(True)
        precision.step(optimizer)
        precision.update()
        return step_losses(g_loss, g_terms, {"discriminator": d_loss})

    return step
