"""The ensemble assembly as it was before the integer/cc3d rewrite, kept as the benchmark's baseline and
the reference the equivalence tests compare against (scipy labelling, float32 (Z, K, H, W) stacks)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from organseg.config import PostprocessConfig
from organseg.organs import ORGAN_LABELS
from organseg.preprocess.resample import resize_slices

# 6-connectivity in 3D, as the CHAOS evaluator's border definition uses; components touching only at an
# edge or a corner count as separate pieces.
_STRUCTURE = ndimage.generate_binary_structure(3, 1)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel (labelling only the box is several times cheaper)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def keep_components(mask: np.ndarray, probs: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Apply the component rules to one organ's candidate mask (probabilities decide the seeds)."""
    if cfg.component_threshold is None and not cfg.largest_component:
        return mask
    box = _bounding_box(mask)
    if box is None:
        return mask
    labelled, count = ndimage.label(mask[box], structure=_STRUCTURE)
    keep = np.ones(count + 1, dtype=bool)
    keep[0] = False
    if cfg.component_threshold is not None:
        # components holding at least one confident voxel (bincount over the seeds: linear time, unlike
        # ndimage.maximum's per-label argsort over the whole volume)
        seeds = labelled[probs[box] >= cfg.component_threshold]
        keep &= np.bincount(seeds, minlength=count + 1) > 0
    out = np.zeros_like(mask)
    if cfg.largest_component:
        if not keep.any():
            return out
        sizes = np.bincount(labelled.ravel(), minlength=count + 1)
        sizes[~keep] = 0
        out[box] = labelled == int(np.argmax(sizes))  # one comparison, not a gather over the box
    else:
        out[box] = keep[labelled]
    return out


def probabilities_to_labels(
    probs: np.ndarray, organs: list[str], cfg: PostprocessConfig
) -> np.ndarray:
    """``(Z, K, H, W)`` organ probabilities → ``(Z, H, W)`` uint8 CHAOS label ids.

    A voxel claimed by several organs goes to the most probable one.
    """
    if probs.ndim != 4 or probs.shape[1] != len(organs):
        raise ValueError(f"expected (Z, {len(organs)}, H, W) probabilities, got {probs.shape}")
    ids = np.array([ORGAN_LABELS[o] for o in organs], dtype=np.uint8)
    masks = [
        keep_components(probs[:, k] >= cfg.threshold, probs[:, k], cfg) for k in range(len(organs))
    ]
    if len(organs) == 1:  # nothing to arbitrate
        return masks[0].astype(np.uint8) * ids[0]
    stacked = np.stack(masks, axis=1)
    labels = np.zeros(probs.shape[:1] + probs.shape[2:], dtype=np.uint8)
    claimed = stacked.any(axis=1)
    if claimed.any():
        winner = np.argmax(np.where(stacked, probs, -1.0), axis=1)
        labels[claimed] = ids[winner[claimed]]
    return labels


def disagreement(member_probs: list[np.ndarray], threshold: float) -> float:
    """1 − mean pairwise Dice of the members' binary masks for one organ (0 = all agree).

    A cheap, interpretable uncertainty: how much the ensemble's members would disagree if each were used
    alone. Two empty masks agree perfectly.
    """
    if len(member_probs) < 2:
        return 0.0
    masks = [p >= threshold for p in member_probs]
    scores = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            total = masks[i].sum() + masks[j].sum()
            scores.append(
                1.0 if total == 0 else 2.0 * np.logical_and(masks[i], masks[j]).sum() / total
            )
    return float(1.0 - np.mean(scores))


def assemble(
    per_organ: dict[str, list[np.ndarray]],
    organs: list[str],
    cfg: PostprocessConfig,
    grid: tuple[int, int],
) -> tuple[np.ndarray, dict[str, int], dict[str, float]]:
    """Members' uint8 maps per organ → (labels on ``grid``, voxels per organ, disagreement per organ)."""
    first = next(m[0] for m in per_organ.values() if m)
    z, size = first.shape[0], first.shape[-1]
    mean = np.zeros((z, len(organs), size, size), dtype=np.float32)
    for k, organ in enumerate(organs):
        maps = per_organ[organ]  # members return uint8 probabilities (p·255)
        if maps:
            total = maps[0].astype(np.uint16)
            for other in maps[1:]:
                total += other  # exact in uint16 for up to 257 members
            np.multiply(total, np.float32(1.0 / (255.0 * len(maps))), out=mean[:, k])
    threshold = round(cfg.threshold * 255)
    uncertainty = {o: disagreement(per_organ[o], threshold) for o in organs}
    restored = resize_slices(mean, grid, order=1)
    labels = probabilities_to_labels(restored, organs, cfg)
    counts = np.bincount(labels.ravel(), minlength=max(ORGAN_LABELS.values()) + 1)
    voxels = {o: int(counts[ORGAN_LABELS[o]]) for o in organs}
    return labels, voxels, uncertainty
