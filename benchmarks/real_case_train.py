"""Train one small member on the real CHAOS CT case and report validation liver Dice (CPU).

A check that the project's own pieces learn real anatomy end to end: ``organseg.io`` reads the case
(78×512×512 CT + liver mask), ``organseg.preprocess`` windows it ([-160, 240] HU → [0, 1]) and resizes
it, ``SliceAugmenter`` augments lightly, ``organseg.models.create_member`` builds the member,
``organseg.losses.build_loss`` gives Dice+BCE, ``organseg.train.steps.plain_step`` optimises and
``organseg.train.validation.validate`` measures. One case only, so the split is by slice:

- ``interleaved`` (default): every ``--val-every``-th slice (from ``--val-offset``) is validation. The
  validation slices span the whole liver, top, middle and bottom, and form a regular slab (z spacing ×
  stride), so the CHAOS surface metrics have a well-defined geometry. Neighbouring training slices
  lie one slice spacing away, which makes this an optimistic, interpolation-like estimate.
- ``block``: a contiguous block of ``--val-block`` slices centred in the liver; harder (no
  training slice inside the block), still a regular slab.

Reported: the validation Dice per epoch at the training resolution (``validate``), and at the end, on
the original 512² grid (probabilities restored with ``PreparedVolume.restore``): 3D liver Dice over the
stacked validation slices (raw 0.5 threshold and after the ensemble's post-processing), the per-slice
mean Dice, and the CHAOS metrics (DICE, RAVD, ASSD, MSSD, score) of the post-processed slab from
``organseg.metrics.evaluate_masks``. The reported model is the last epoch's (no selection on the
validation slices). No Ray: a plain PyTorch loop on ``--threads`` CPU threads.

Run: ``python benchmarks/real_case_train.py [--epochs 30 --size 128 --json out.json]``. The sample is
found through ``ORGANSEG_CHAOS_SAMPLE`` or ``../shared/chaos-sample`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _sample import find_sample

ORGANS = ["liver"]


def split_slices(
    n_slices: int,
    mode: str = "interleaved",
    every: int = 5,
    offset: int = 2,
    block: int = 15,
    liver_slices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` slice indices: disjoint, sorted, together every slice.

    ``interleaved``: ``offset, offset + every, ...`` validate. ``block``: ``block`` contiguous slices
    centred on the middle of ``liver_slices`` (indices holding liver; all slices when None).
    """
    if n_slices < 2:
        raise ValueError(f"need at least 2 slices to split, got {n_slices}")
    if mode == "interleaved":
        if every < 2 or not 0 <= offset < every:
            raise ValueError(
                f"interleaved split needs every >= 2 and 0 <= offset < every, got {every}, {offset}"
            )
        val = np.arange(offset, n_slices, every)
    elif mode == "block":
        if not 1 <= block < n_slices:
            raise ValueError(f"block split needs 1 <= block < {n_slices}, got {block}")
        span = (
            liver_slices if liver_slices is not None and len(liver_slices) else np.arange(n_slices)
        )
        centre = (int(span.min()) + int(span.max())) // 2
        start = min(max(centre - block // 2, 0), n_slices - block)
        val = np.arange(start, start + block)
    else:
        raise ValueError(f"unknown split {mode!r}; expected 'interleaved' or 'block'")
    train = np.setdiff1d(np.arange(n_slices), val)
    return train, val


def slab_geometry(geometry: Any, first: int, step: int) -> Any:
    """Geometry of slices ``first, first + step, ...`` of a volume on ``geometry``: same plane, the
    origin moved to slice ``first`` and the slice spacing multiplied by ``step``."""
    from organseg.io import Geometry

    sx, sy, sz = geometry.spacing
    origin = np.asarray(geometry.origin) + geometry.direction_matrix @ np.array(
        [0.0, 0.0, first * sz]
    )
    return Geometry(spacing=(sx, sy, sz * step), origin=tuple(origin), direction=geometry.direction)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sample", type=Path, default=None, help="CHAOS root (default: auto)")
    p.add_argument("--case", default="CT/1", help="case id to train on (default CT/1)")
    p.add_argument("--arch", default="attention_unet", help="member name (organseg models list)")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--size", type=int, default=128, help="in-plane training size (multiple of 32)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dice-weight", type=float, default=0.5)
    p.add_argument("--split", choices=["interleaved", "block"], default="interleaved")
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--val-offset", type=int, default=2)
    p.add_argument("--val-block", type=int, default=15)
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.sample or find_sample()
    if root is None:
        print(
            "CHAOS sample not found: set ORGANSEG_CHAOS_SAMPLE (or place it at ../shared/chaos-sample)"
        )
        return 2

    # On a shared, busy CPU, OpenMP threads that spin while waiting at barriers steal the cores
    # their siblings need: measured here, 2 spinning threads ran an epoch 30-50× slower than 1 thread,
    # while passive waiting made 2 threads as fast as or faster than 1. Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from organseg.config import PostprocessConfig
    from organseg.ensemble.postprocess import probabilities_to_labels
    from organseg.io import discover_cases, load_case
    from organseg.losses import build_loss
    from organseg.metrics import evaluate_masks
    from organseg.models import create_member, get_member_spec
    from organseg.organs import ORGAN_LABELS
    from organseg.preprocess import (
        AugmentConfig,
        PreprocessConfig,
        SliceAugmenter,
        prepare_volume,
        resize_slices,
        to_channels,
    )
    from organseg.train.steps import plain_step
    from organseg.train.validation import dice_3d, validate

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    refs = [r for r in discover_cases(root) if r.case_id == args.case]
    if not refs:
        print(f"{root}: no case {args.case!r}")
        return 2
    case = load_case(refs[0])
    if case.label is None:
        print(f"{args.case}: no ground truth")
        return 2
    liver_id = ORGAN_LABELS["liver"]
    truth_full = case.label.array == liver_id  # (Z, 512, 512) on the original grid
    prepared = prepare_volume(case.image, PreprocessConfig(size=args.size))
    labels = resize_slices(case.label.array, args.size, order=0)  # nearest: label ids stay exact
    n_slices = prepared.array.shape[0]
    liver_slices = np.flatnonzero(truth_full.any(axis=(1, 2)))
    train_idx, val_idx = split_slices(
        n_slices, args.split, args.val_every, args.val_offset, args.val_block, liver_slices
    )
    print(
        f"{args.case}: {case.image.shape} CT at {args.size}²; {args.split} split: {len(train_idx)} "
        f"training / {len(val_idx)} validation slices (val {val_idx.tolist()}); "
        f"load+prepare {time.perf_counter() - started:.1f} s"
    )

    spec = get_member_spec(args.arch)
    kwargs = {"base_channels": args.base_channels, "depth": args.depth}
    kwargs = {k: v for k, v in kwargs.items() if k in spec.params}
    in_channels = 1 if not spec.pretrainable else spec.recommended_in_channels
    model = create_member(args.arch, in_channels, len(ORGANS), **kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    loss_fn = build_loss("dice_bce", args.dice_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(train_idx) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=max(1, args.epochs * steps_per_epoch), pct_start=0.15
    )
    step = plain_step(model, loss_fn, optimizer)
    # Light augmentation: one case, so mostly small affine changes and intensity jitter.
    augment = SliceAugmenter(
        AugmentConfig(
            enabled=not args.no_augment,
            affine_p=0.7, scale=(0.9, 1.1), rotation_deg=10.0, shear_deg=5.0, shift=0.06,
            elastic_p=0.2, flip_vertical_p=0.0, noise_p=0.3, noise_std=(0.0, 0.02),
            intensity_p=0.5, histogram_p=0.0,
        )
    )  # fmt: skip
    print(
        f"member {args.arch} {kwargs} in_channels={in_channels}: {n_params / 1e6:.2f} M parameters"
    )

    images = prepared.array  # (Z, 1, size, size) float32
    val_volume = [(images[val_idx], labels[val_idx])]
    history = []
    train_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            pairs = [augment(images[i], labels[i], rng) for i in batch]
            x = to_channels(torch.from_numpy(np.stack([im for im, _ in pairs])), in_channels)
            y = torch.from_numpy(
                np.stack([m == liver_id for _, m in pairs])[:, None].astype(np.float32)
            )
            losses.append(step(x, y).total)
            scheduler.step()
        metrics = validate(model, val_volume, ORGANS, in_channels, torch.device("cpu"), loss_fn)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), **metrics,
                  "seconds": time.perf_counter() - t0}  # fmt: skip
        history.append(record)
        print(
            f"epoch {epoch:3d}/{args.epochs}  loss {record['loss']:.4f}  val_loss "
            f"{metrics['val_loss']:.4f}  val liver Dice ({args.size}²) {metrics['val_dice_liver']:.4f}  "
            f"{record['seconds']:.1f} s",
            flush=True,
        )
    train_seconds = time.perf_counter() - train_started

    # Final evaluation on the original grid: predict every slice, restore to 512², take the val slab.
    from organseg.train.validation import predict_slices

    probs = prepared.restore(predict_slices(model, images, in_channels, torch.device("cpu")))
    val_probs = probs[val_idx]  # (V, 1, 512, 512)
    val_truth = truth_full[val_idx]
    raw = val_probs[:, 0] >= 0.5
    post = probabilities_to_labels(val_probs, ORGANS, PostprocessConfig()) == liver_id
    per_slice = [dice_3d(p, t) for p, t in zip(raw, val_truth, strict=True)]
    with_liver = [d for d, t in zip(per_slice, val_truth, strict=True) if t.any()]
    step_z = args.val_every if args.split == "interleaved" else 1
    geometry = slab_geometry(case.image.geometry, int(val_idx[0]), step_z)
    chaos = evaluate_masks(
        val_truth.astype(np.uint8) * liver_id, post.astype(np.uint8) * liver_id, geometry, ORGANS
    )["liver"]
    total_seconds = time.perf_counter() - started
    result = {
        "case": args.case,
        "arch": args.arch,
        "kwargs": kwargs,
        "parameters": n_params,
        "size": args.size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augment": not args.no_augment,
        "seed": args.seed,
        "threads": args.threads,
        "split": args.split,
        "train_slices": train_idx.tolist(),
        "val_slices": val_idx.tolist(),
        "val_dice_liver_train_res": history[-1]["val_dice_liver"] if history else None,
        "val_dice_liver_3d": dice_3d(raw, val_truth),
        "val_dice_liver_3d_postprocessed": dice_3d(post, val_truth),
        "val_slice_dice_mean": float(np.mean(per_slice)),
        "val_slice_dice_mean_liver_slices": float(np.mean(with_liver)) if with_liver else None,
        "chaos_liver": chaos.to_dict(),
        "slab_spacing": list(geometry.spacing),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "history": history,
    }
    print(
        f"\nvalidation ({len(val_idx)} slices, 512²): 3D liver Dice {result['val_dice_liver_3d']:.4f} "
        f"(post-processed {result['val_dice_liver_3d_postprocessed']:.4f}); per-slice mean "
        f"{result['val_slice_dice_mean']:.4f} (liver slices {result['val_slice_dice_mean_liver_slices']:.4f})"
    )
    print(
        f"CHAOS (post-processed slab, spacing {tuple(round(s, 3) for s in geometry.spacing)} mm): "
        f"DICE {chaos.dice:.4f}  RAVD {chaos.ravd:.2f} %  ASSD {chaos.assd:.2f} mm  "
        f"MSSD {chaos.mssd:.2f} mm  score {chaos.score:.1f}"
    )
    print(
        f"time: training {train_seconds:.0f} s, total {total_seconds:.0f} s ({args.threads} threads)"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
