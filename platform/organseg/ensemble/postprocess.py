"""From member probabilities to a label map: mean, thresholds, hysteresis, largest component, overlaps.

Members answer uint8 probabilities (p·255). :func:`labels_from_member_maps` keeps the whole assembly in
integers where the arithmetic allows it: the per-voxel sum of the members' maps is exact in uint16, and
because the float32 mean ``sum · 1/(255·n)`` is monotone in the sum, "mean ≥ threshold" is the same test as
"sum ≥ an integer level" found once per call from a 255·n+1 entry table. No float32 copy of the
``(Z, K, H, W)`` stack is ever made; float32 appears only when the network grid differs from the input's
(bilinear restore, done per organ and in slabs of slices, then thresholded at once). The masks equal what the
float path (mean → restore → threshold → components → argmax) gives, bit for bit.

Components are labelled with ``connected-components-3d`` (cc3d: several times scipy's ``ndimage.label``
on the same masks), inside the bounding box of the candidate voxels, with 6-connectivity.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cc3d
import numpy as np

from organseg.config import PostprocessConfig
from organseg.labels import LabelSet
from organseg.organs import ORGAN_LABELS
from organseg.preprocess.resample import resize_slices

# 6-connectivity in 3D, as the CHAOS evaluator's border definition uses; components touching only at an
# edge or a corner count as separate pieces.
CONNECTIVITY = 6
# Slices restored (bilinear, float32) at a time when the network grid differs from the input grid: a few
# MB of float32 in flight instead of the whole (Z, K, H, W) stack.
_RESTORE_SLAB = 8
# (organ index, voxel index arrays) → that organ's float32 probabilities there
ProbsAt = Callable[[int, tuple[np.ndarray, ...]], np.ndarray]


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


def select_components(mask: np.ndarray, seeds: np.ndarray | None, largest: bool) -> np.ndarray:
    """The components of ``mask`` that hold a ``seeds`` voxel (all when None), only the largest if asked.

    Ties in size go to the component met first in raster order (as with scipy's labelling before).
    """
    if seeds is None and not largest:
        return mask
    box = _bounding_box(mask)
    out = np.zeros(mask.shape, dtype=bool)
    if box is None:
        return out
    labelled, count = cc3d.connected_components(
        np.ascontiguousarray(mask[box]), connectivity=CONNECTIVITY, return_N=True
    )
    if seeds is not None:
        seeded = labelled[seeds[box]]  # seeds lie inside the mask, so they are all in the box
        keep = np.bincount(seeded, minlength=count + 1) > 0
        keep[0] = False
        kept = np.flatnonzero(keep)
        if kept.size == 0:
            return out
        if not largest:
            np.take(keep, labelled, out=out[box])
            return out
        if kept.size == 1:  # one seeded component: no sizes needed
            np.equal(labelled, kept[0], out=out[box])
            return out
    else:
        keep = None
    if count == 1:
        np.not_equal(labelled, 0, out=out[box])
        return out
    # sizes counted over the mask's voxels only (and of seeded components only): on noisy maps that is
    # a fraction of the box, and a bincount over the whole box would widen every label to int64 first
    inside = labelled[mask[box]]
    if keep is not None:
        inside = inside[keep[inside]]
    sizes = np.bincount(inside, minlength=count + 1)
    np.equal(
        labelled, int(np.argmax(sizes)), out=out[box]
    )  # written in place: no box-sized temporary
    return out


def keep_components(
    mask: np.ndarray, probs: np.ndarray, cfg: PostprocessConfig, largest: bool | None = None
) -> np.ndarray:
    """Apply the component rules to one organ's candidate mask (probabilities decide the seeds);
    ``largest`` overrides ``cfg.largest_component`` for this organ."""
    seeds = None if cfg.component_threshold is None else probs >= cfg.component_threshold
    if seeds is not None:
        seeds &= mask
    return select_components(mask, seeds, cfg.largest_component if largest is None else largest)


def label_rules(
    organs: list[str], cfg: PostprocessConfig, label_set: LabelSet | None
) -> tuple[np.ndarray, list[bool]]:
    """Each organ's label value and whether only its largest component is kept.

    Without ``label_set``: the CHAOS ids, and ``cfg.largest_component`` for every organ. With one: its
    values, and the largest component only where both the config and the label ask for it (a vessel or
    a lesion keeps every piece; :data:`organseg.labels.SOLID_ORGANS` are the defaults).
    """
    if label_set is None:
        ids = [ORGAN_LABELS[o] for o in organs]
        return np.array(ids, dtype=np.uint8), [cfg.largest_component] * len(organs)
    labels = [label_set[o] for o in organs]
    return (
        np.array([lb.value for lb in labels], dtype=np.uint8),
        [cfg.largest_component and lb.largest_component for lb in labels],
    )


def _arbitrate(masks: list[np.ndarray], ids: np.ndarray, probs_at: ProbsAt) -> np.ndarray:
    """Organ masks → uint8 label ids; a voxel claimed by several organs goes to the most probable one
    (ties to the organ listed first)."""
    shape = masks[0].shape
    if len(masks) == 1:
        return np.multiply(masks[0], ids[0], dtype=np.uint8)
    claims = np.zeros(shape, dtype=np.uint8)
    labels = np.zeros(shape, dtype=np.uint8)
    for mask, organ_id in zip(masks, ids, strict=True):
        claims += mask
        np.putmask(labels, mask, organ_id)
    contested = claims > 1
    if contested.any():
        where = np.nonzero(contested)
        values = np.stack(
            [
                np.where(mask[where], probs_at(k, where), np.float32(-1.0))
                for k, mask in enumerate(masks)
            ]
        )
        labels[where] = ids[np.argmax(values, axis=0)]
    return labels


def probabilities_to_labels(
    probs: np.ndarray,
    organs: list[str],
    cfg: PostprocessConfig,
    label_set: LabelSet | None = None,
) -> np.ndarray:
    """``(Z, K, H, W)`` organ probabilities → ``(Z, H, W)`` uint8 label values (CHAOS ids unless
    ``label_set`` gives others).

    A voxel claimed by several organs goes to the most probable one.
    """
    if probs.ndim != 4 or probs.shape[1] != len(organs):
        raise ValueError(f"expected (Z, {len(organs)}, H, W) probabilities, got {probs.shape}")
    ids, largest = label_rules(organs, cfg, label_set)
    masks = [
        keep_components(probs[:, k] >= cfg.threshold, probs[:, k], cfg, largest[k])
        for k in range(len(organs))
    ]
    return _arbitrate(masks, ids, lambda k, where: probs[:, k][where])


def disagreement(member_probs: Sequence[np.ndarray], threshold: float) -> float:
    """1 − mean pairwise Dice of the members' binary masks for one organ (0 = all agree).

    A cheap, interpretable uncertainty: how much the ensemble's members would disagree if each were used
    alone. Two empty masks agree perfectly. Masks are bit-packed, so each pair costs an AND and a popcount
    over an eighth of the voxels; only the box where any member reaches ``threshold`` is looked at.
    """
    if len(member_probs) < 2:
        return 0.0
    box = _bounding_box(_member_max(member_probs) >= threshold)
    if box is None:
        return 0.0
    packed = [np.packbits(p[box] >= threshold) for p in member_probs]
    sizes = [int(np.bitwise_count(p).sum()) for p in packed]
    scores = []
    for i in range(len(packed)):
        for j in range(i + 1, len(packed)):
            total = sizes[i] + sizes[j]
            both = int(np.bitwise_count(np.bitwise_and(packed[i], packed[j])).sum())
            scores.append(1.0 if total == 0 else 2.0 * both / total)
    return float(1.0 - np.mean(scores))


def _member_max(maps: Sequence[np.ndarray]) -> np.ndarray:
    top = maps[0].copy()
    for other in maps[1:]:
        np.maximum(top, other, out=top)
    return top


@dataclass
class EnsembleMasks:
    """What the assembly hands back: labels on the input grid, voxels per organ, member disagreement."""

    labels: np.ndarray
    voxels: dict[str, int]
    uncertainty: dict[str, float]


class _OrganMean:
    """One organ's members summed in uint16 (exact), and the float32 mean the float path would compute."""

    def __init__(self, maps: Sequence[np.ndarray], shape: tuple[int, int, int]) -> None:
        self.count = len(maps)
        dtype = np.uint16 if 255 * max(1, self.count) < 2**16 else np.uint32
        self.total = np.zeros(shape, dtype=dtype)
        if maps:
            np.add(maps[0], maps[1] if len(maps) > 1 else 0, out=self.total, dtype=dtype)
        for m in maps[2:]:
            np.add(self.total, m, out=self.total)
        # float32 mean for every possible sum, computed exactly as `total * float32(1/(255 n))`
        scale = np.float32(1.0 / (255.0 * self.count)) if self.count else np.float32(0.0)
        self.table = np.multiply(np.arange(255 * self.count + 1, dtype=dtype), scale)

    def level(self, threshold: float) -> int:
        """The smallest sum whose float32 mean reaches ``threshold`` (one past the end: never)."""
        hits = np.flatnonzero(self.table >= threshold)
        return int(hits[0]) if hits.size else len(self.table)

    def mean(self, zslice: slice = slice(None)) -> np.ndarray:
        return self.table[self.total[zslice]]


def labels_from_member_maps(
    maps: dict[str, Sequence[np.ndarray]],
    organs: list[str],
    cfg: PostprocessConfig,
    grid: tuple[int, int] | None = None,
    label_set: LabelSet | None = None,
) -> EnsembleMasks:
    """Members' uint8 maps ``{organ: [(Z, S, S), ...]}`` → labels ``(Z, H, W)`` on the input ``grid``.

    Equal to averaging in float32, restoring bilinearly to ``grid`` (skipped when it equals S×S),
    thresholding, keeping components and giving contested voxels to the most probable organ.
    ``label_set`` gives the label values and per-label component rule (None: CHAOS ids, the config's
    rule for every organ).
    """
    ids, largest = label_rules(organs, cfg, label_set)
    first = next((m[0] for m in maps.values() if len(m)), None)
    if first is None:
        raise ValueError("no member maps to assemble")
    z, s = first.shape[0], first.shape[-1]
    h, w = grid or (s, s)
    resample = (h, w) != (s, s)
    threshold = round(cfg.threshold * 255)
    # the disagreement reads only the members' maps: it runs beside the labelling (numpy and cc3d release
    # the GIL), which takes a second core where the replica has one
    pending = {o: _pool().submit(disagreement, maps.get(o, ()), threshold) for o in organs}
    means = [_OrganMean(maps.get(o, ()), (z, s, s)) for o in organs]
    masks = []
    for k, mean in enumerate(means):
        if mean.count == 0:
            masks.append(np.zeros((z, h, w), dtype=bool))
            continue
        if resample:
            candidate, seeds = _restore_thresholded(mean, cfg, (h, w))
        else:
            candidate = mean.total >= mean.level(cfg.threshold)
            seeds = None
            if cfg.component_threshold is not None:
                seeds = mean.total >= mean.level(cfg.component_threshold)
        masks.append(select_components(candidate, seeds, largest[k]))

    def probs_at(k: int, where: tuple[np.ndarray, ...]) -> np.ndarray:
        if not resample:
            return means[k].table[means[k].total[where]]
        # restore only the slices holding contested voxels (slices are restored independently)
        slices = np.unique(where[0])
        restored = resize_slices(means[k].mean(slices), (h, w), order=1)
        return restored[np.searchsorted(slices, where[0]), where[1], where[2]]

    labels = _arbitrate(masks, ids, probs_at)
    uncertainty = {o: pending[o].result() for o in organs}
    if len(organs) == 1:
        voxels = {organs[0]: int(np.count_nonzero(masks[0]))}
    else:
        voxels = {o: int(np.count_nonzero(labels == i)) for o, i in zip(organs, ids, strict=True)}
    return EnsembleMasks(labels=labels, voxels=voxels, uncertainty=uncertainty)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="organseg-postprocess")


def _restore_thresholded(
    mean: _OrganMean, cfg: PostprocessConfig, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate and seed masks on ``grid``: the float32 mean restored slab by slab, thresholded at once."""
    z = mean.total.shape[0]
    candidate = np.empty((z, *grid), dtype=bool)
    seeds = None if cfg.component_threshold is None else np.empty((z, *grid), dtype=bool)
    for start in range(0, z, _RESTORE_SLAB):
        part = slice(start, start + _RESTORE_SLAB)
        restored = resize_slices(mean.mean(part), grid, order=1)
        np.greater_equal(restored, np.float32(cfg.threshold), out=candidate[part])
        if seeds is not None:
            np.greater_equal(restored, np.float32(cfg.component_threshold), out=seeds[part])
    return candidate, seeds
