"""One optimisation step per training mode (plain, cascade, cGAN), kept apart from the Ray plumbing.

The per-worker loop picks a step function once; each step takes a batch and returns the scalar loss it
optimised, so the loop itself does not branch on the mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from organseg.losses import discriminator_loss, generator_adversarial_loss

StepFn = Callable[[torch.Tensor, torch.Tensor], float]


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DistributedDataParallel wrapper (checkpoints store the bare weights)."""
    return model.module if hasattr(model, "module") else model


def supervised_loss(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Segmentation loss; a cascade is supervised at both stages (auto-context deep supervision)."""
    inner = unwrap(model)
    if hasattr(inner, "forward_stages"):
        stage1, stage2 = inner.forward_stages(x) if inner is model else _ddp_stages(model, x)
        return 0.5 * loss_fn(stage1, y) + loss_fn(stage2, y)
    return loss_fn(model(x), y)


def _ddp_stages(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # DDP only hooks forward(); run the final output through it so gradients synchronise, and take
    # stage one from the bare module (its parameters are part of the same graph).
    final = model(x)
    stage1, _ = unwrap(model).forward_stages(x)
    return stage1, final


def plain_step(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer) -> StepFn:
    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = supervised_loss(model, loss_fn, x, y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


@dataclass
class AdversarialParts:
    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    lam: float


def adversarial_step(
    model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, adv: AdversarialParts
) -> StepFn:
    """cGAN: update D on (image ⊕ truth) vs (image ⊕ prediction), then G on −log D(x, G(x)) + λ·seg loss."""

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        logits = model(x)
        fake = torch.cat([x, torch.sigmoid(logits)], dim=1)
        real = torch.cat([x, y], dim=1)

        adv.optimizer.zero_grad(set_to_none=True)
        d_loss = discriminator_loss(adv.discriminator(real), adv.discriminator(fake.detach()))
        d_loss.backward()
        adv.optimizer.step()

        optimizer.zero_grad(set_to_none=True)
        for p in adv.discriminator.parameters():
            p.requires_grad_(False)
        g_loss = generator_adversarial_loss(adv.discriminator(fake), loss_fn(logits, y), adv.lam)
        g_loss.backward()
        for p in adv.discriminator.parameters():
            p.requires_grad_(True)
        optimizer.step()
        return float(g_loss.detach())

    return step
