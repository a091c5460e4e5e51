"""Validation on whole patients: soft Dice and hard per-organ 3D Dice at the cached resolution."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from organseg.labels import IGNORE_TARGET
from organseg.organs import ORGAN_LABELS
from organseg.preprocess.channels import to_channels


@torch.no_grad()
def predict_slices(
    model: nn.Module, image: np.ndarray, in_channels: int, device: torch.device, batch_size: int = 8
) -> np.ndarray:
    """Sigmoid probabilities ``(Z, K, H, W)`` for a ``(Z, C, H, W)`` stack, in slice batches."""
    model.eval()
    out = []
    for start in range(0, image.shape[0], batch_size):
        x = torch.from_numpy(np.asarray(image[start : start + batch_size], dtype=np.float32))
        x = to_channels(x, in_channels).to(device)
        out.append(torch.sigmoid(model(x)).float().cpu().numpy())
    return np.concatenate(out, axis=0)


def dice_3d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Hard Dice of two boolean volumes; both empty counts as perfect agreement."""
    denominator = pred.sum() + truth.sum()
    return 1.0 if denominator == 0 else float(2.0 * np.logical_and(pred, truth).sum() / denominator)


def validate(
    model: nn.Module,
    volumes: Iterable[tuple[np.ndarray, np.ndarray]],
    organs: list[str],
    in_channels: int,
    device: torch.device,
    loss_fn: nn.Module | None = None,
    threshold: float = 0.5,
    values: Sequence[int] | None = None,
    ignore: int | None = None,
) -> dict[str, float]:
    """Metrics over validation volumes ``(image (Z,C,H,W), labels (Z,H,W))``.

    ``val_dice`` (the selection/tuning metric) is the mean over volumes and organs of the hard 3D Dice;
    ``val_soft_dice`` pools soft overlaps over all voxels; ``val_dice_<organ>`` is per organ.
    ``values`` are the organs' label values (default: the CHAOS ids); voxels of the ``ignore`` value
    count in no Dice and no loss.
    """
    ids = list(values) if values is not None else [ORGAN_LABELS[o] for o in organs]
    hard: dict[str, list[float]] = {o: [] for o in organs}
    soft_num = np.zeros(len(organs))
    soft_den = np.zeros(len(organs))
    losses = []
    for image, labels in volumes:
        probs = predict_slices(model, image, in_channels, device)
        truth = np.stack([labels == i for i in ids], axis=1)
        keep = None if ignore is None else (np.asarray(labels) != ignore)[:, None]
        if keep is not None and not keep.all():
            probs = probs * keep  # ignored voxels: predicted or not, they count for nothing
        else:
            keep = None
        for k, organ in enumerate(organs):
            hard[organ].append(dice_3d(probs[:, k] >= threshold, truth[:, k]))
            soft_num[k] += 2.0 * float((probs[:, k] * truth[:, k]).sum())
            soft_den[k] += float(probs[:, k].sum() + truth[:, k].sum())
        if loss_fn is not None:
            logits = torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6))
            target = truth.astype(np.float32)
            if keep is not None:
                target[np.broadcast_to(~keep, target.shape)] = IGNORE_TARGET
            losses.append(float(loss_fn(logits, torch.from_numpy(target))))
    metrics = {f"val_dice_{o}": float(np.mean(v)) if v else 0.0 for o, v in hard.items()}
    metrics["val_dice"] = float(np.mean(list(metrics.values()))) if metrics else 0.0
    soft = np.where(soft_den > 0, soft_num / np.maximum(soft_den, 1e-9), 1.0)
    metrics["val_soft_dice"] = float(soft.mean()) if len(soft) else 0.0
    if losses:
        metrics["val_loss"] = float(np.mean(losses))
    return metrics
