"""Training losses and the soft Dice metric for multi-label sigmoid logits (N×organs×H×W).

- :class:`SoftDiceLoss` — soft Dice per organ channel with a smoothing term, averaged over channels.
  smp's ``DiceLoss`` zeroes the loss of every channel that is empty in the target batch, so a member
  trained with Dice alone (DualTail-Net, LinkNet-34) would never be penalised for predicting a spleen
  on slices without one; the smoothing term here makes empty-target channels count instead
  (prediction empty -> Dice 1, false positives -> Dice near 0).
- :func:`bce` — smp's ``SoftBCEWithLogitsLoss`` (BCE on logits, optional label smoothing).
- :class:`DiceBCELoss` — ``w·Dice + (1−w)·BCE``; ``w`` is what the tuner searches.
- :func:`generator_adversarial_loss` / :func:`discriminator_loss` — the cGAN losses, written with
  BCE-with-logits so ``−log D`` never evaluates ``log(0)``.
- :func:`loss_terms` / :func:`sum_terms` — a loss as its named, weighted terms (what training reports
  per term); summed in order they are the loss itself, bit for bit.

Ignored voxels: a target of :data:`organseg.labels.IGNORE_TARGET` (−1, in every channel) marks a voxel of the dataset's
ignore label (nnU-Net's ``ignore``: not annotated). Dice and BCE leave such voxels out entirely, so a
partially annotated case trains on its annotated part only. Targets without them take the unmasked path
unchanged.
"""

from __future__ import annotations

import functools
import operator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from organseg.errors import ConfigError

LossName = Literal["dice", "bce", "dice_bce"]
LOSS_NAMES: tuple[str, ...] = ("dice", "bce", "dice_bce")


def ignored(target: torch.Tensor) -> torch.Tensor | None:
    """The mask of voxels to keep (False where the target is :data:`organseg.labels.IGNORE_TARGET`), or None when
    every voxel counts."""
    keep = target >= 0
    return None if bool(keep.all()) else keep


def _as_channels(t: torch.Tensor) -> torch.Tensor:
    """Binary N×H×W tensors become N×1×H×W so binary and multi-label share one code path."""
    return t.unsqueeze(1) if t.dim() == 3 else t


def soft_dice_score(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    from_logits: bool = True,
    smooth: float = 1.0,
    per_sample: bool = False,
) -> torch.Tensor:
    """Soft Dice ``(2|P∩T| + s) / (|P| + |T| + s)`` per channel.

    ``pred`` holds logits (``from_logits=True``) or probabilities; ``target`` is float one-hot per
    organ of the same shape (N×C×H×W, or N×H×W for binary). Sums run over the batch and pixels, giving
    a C-vector; ``per_sample=True`` keeps the batch axis (N×C) instead.
    """
    pred, target = _as_channels(pred), _as_channels(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    probs = torch.sigmoid(pred) if from_logits else pred
    target = target.to(probs.dtype)
    keep = ignored(target)
    if keep is not None:  # ignored voxels add nothing to the overlap or the sizes
        probs = probs * keep
        target = target * keep
    spatial = tuple(range(2, probs.dim()))  # (H, W) of slices, (D, H, W) of volumes
    dims = spatial if per_sample else (0, *spatial)
    intersection = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return (2 * intersection + smooth) / (total + smooth)


class SoftDiceLoss(nn.Module):
    """``1 − mean soft Dice`` over channels (binary or multi-label), with a smoothing term."""

    def __init__(
        self, smooth: float = 1.0, per_sample: bool = False, from_logits: bool = True
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ConfigError(f"dice smooth must be >= 0, got {smooth}")
        self.smooth = smooth
        self.per_sample = per_sample
        self.from_logits = from_logits

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = soft_dice_score(
            pred,
            target,
            from_logits=self.from_logits,
            smooth=self.smooth,
            per_sample=self.per_sample,
        )
        return 1.0 - score.mean()

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"dice": self(pred, target)}


def bce(smooth_factor: float | None = None, pos_weight: torch.Tensor | None = None) -> nn.Module:
    """Binary cross-entropy on logits (smp's ``SoftBCEWithLogitsLoss``; optional label smoothing)."""
    from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss

    return _ChannelBCE(SoftBCEWithLogitsLoss(smooth_factor=smooth_factor, pos_weight=pos_weight))


class _ChannelBCE(nn.Module):
    """Accepts binary N×H×W targets like the Dice loss and passes float targets to smp's BCE."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = _as_channels(pred), _as_channels(target)
        keep = ignored(target)
        if keep is None:
            return self.inner(pred, target.to(pred.dtype))
        # smp's own ignore_index zeroes ignored voxels but still divides by all of them; the mean
        # here runs over the kept voxels only, so how much of a batch is unannotated does not scale it
        from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss

        inner = self.inner
        per_voxel = SoftBCEWithLogitsLoss(
            reduction="none",
            smooth_factor=getattr(inner, "smooth_factor", None),
            pos_weight=getattr(inner, "pos_weight", None),
        )(pred, target.clamp(min=0).to(pred.dtype))
        weights = keep.to(per_voxel.dtype)
        return (per_voxel * weights).sum() / weights.sum().clamp(min=1.0)

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"bce": self(pred, target)}


class DiceBCELoss(nn.Module):
    """``dice_weight·Dice + (1 − dice_weight)·BCE``."""

    def __init__(self, dice_weight: float = 0.5, smooth: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= dice_weight <= 1.0:
            raise ConfigError(f"dice_weight must be in [0, 1], got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.dice = SoftDiceLoss(smooth=smooth)
        self.bce = bce()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum_terms(self.terms(pred, target))

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``dice_weight·Dice`` and ``(1 − dice_weight)·BCE``: the two weighted terms ``forward`` adds."""
        w = self.dice_weight
        return {"dice": w * self.dice(pred, target), "bce": (1.0 - w) * self.bce(pred, target)}


def loss_terms(
    loss_fn: nn.Module, pred: torch.Tensor, target: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``loss_fn``'s named, weighted terms (``{"seg": loss}`` for a loss that names none); summed in
    order by :func:`sum_terms` they are ``loss_fn(pred, target)`` exactly."""
    terms = getattr(loss_fn, "terms", None)
    return terms(pred, target) if callable(terms) else {"seg": loss_fn(pred, target)}


def sum_terms(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """The terms added left to right (the same operations, hence the same bits, as the loss)."""
    return functools.reduce(operator.add, terms.values())


def build_loss(name: str, dice_weight: float = 0.5, smooth: float = 1.0) -> nn.Module:
    """Loss by config name: ``"dice"``, ``"bce"`` or ``"dice_bce"`` (using ``dice_weight``)."""
    if name == "dice":
        return SoftDiceLoss(smooth=smooth)
    if name == "bce":
        return bce()
    if name == "dice_bce":
        return DiceBCELoss(dice_weight=dice_weight, smooth=smooth)
    raise ConfigError(f"unknown loss {name!r}; valid losses are {list(LOSS_NAMES)}")


def generator_adversarial_loss(
    d_fake_logits: torch.Tensor, seg_loss: torch.Tensor, lam: float
) -> torch.Tensor:
    """``−log D(x, G(x)) + λ·seg_loss`` (the sum of :func:`generator_terms`)."""
    return sum_terms(generator_terms(d_fake_logits, seg_loss, lam))


def generator_terms(
    d_fake_logits: torch.Tensor, seg_loss: torch.Tensor, lam: float
) -> dict[str, torch.Tensor]:
    """The generator's terms ``−log D(x, G(x))`` and ``λ·seg_loss``; ``−log σ(z)`` is computed as
    BCE-with-logits against 1."""
    adv = F.binary_cross_entropy_with_logits(d_fake_logits, torch.ones_like(d_fake_logits))
    return {"generator_adv": adv, "generator_seg": lam * seg_loss}


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """``½[−log D(x, y) − log(1 − D(x, G(x)))]`` (halved as in pix2pix to slow D relative to G)."""
    real = F.binary_cross_entropy_with_logits(d_real_logits, torch.ones_like(d_real_logits))
    fake = F.binary_cross_entropy_with_logits(d_fake_logits, torch.zeros_like(d_fake_logits))
    return 0.5 * (real + fake)
