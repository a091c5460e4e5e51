"""A 3D member and a 2D member trained on the real CHAOS CT case, scored on the same held-out slab.

The split is ``benchmarks/real_case_train.py``'s ``block`` protocol: a contiguous block of slices centred
in the liver is held out (interleaved slices would leak their neighbours into a 3D patch). The 2D row is
``real_case_train.py --split block`` itself; the 3D member trains on patches of the two training
sub-volumes above and below the slab (foreground-oversampled ``PatchDataset``, MONAI augmentation,
the trainer's deep-supervision step), then predicts the whole volume with the sliding window
(``organseg.ensemble.sliding.predict_volume``); both are restored to the 512² grid and scored on the slab:
liver Dice (raw 0.5 threshold and post-processed) and the CHAOS metrics. No Ray: plain PyTorch on CPU.

    python benchmarks/real_case_3d.py [--epochs 40 --epochs-2d 25 --size 128 --json out.json]

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _sample import find_sample


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sample", type=Path, default=None)
    p.add_argument("--case", default="CT/1")
    p.add_argument("--size", type=int, default=128, help="prepared in-plane size (multiple of 32)")
    p.add_argument("--arch", default="unet3d_fullres", choices=["unet3d_fullres", "resunet3d_ps"])
    p.add_argument("--width", type=int, default=8, help="starting channels of the 3D member")
    p.add_argument("--patch", type=int, nargs=3, default=[16, 64, 64], help="z y x")
    p.add_argument("--epochs", type=int, default=40, help="3D epochs")
    p.add_argument("--patches-per-epoch", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--epochs-2d", type=int, default=25)
    p.add_argument("--foreground", type=float, default=0.5, help="share of organ-centred patches")
    p.add_argument(
        "--reuse-2d", type=Path, default=None, help="the 2D row from an earlier run's --json file"
    )
    p.add_argument("--val-block", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


class _Volumes:
    """In-memory stand-in for a VolumeCache (the sub-volumes of one case, already at the member grid)."""

    def __init__(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self.parts = {
            k: (img, lab, np.argwhere(lab > 0).astype(np.int32)) for k, (img, lab) in parts.items()
        }

    def volume(self, sample_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.parts[sample_id]

    def stats(self, sample_id: str) -> tuple[float, float]:
        image = self.parts[sample_id][0]
        return float(image.mean()), float(image.std())


def _num(value: float | None, width: int, digits: int) -> str:
    """A metric for the table; undefined ones (an empty prediction has no surface) print as n/a."""
    return f"{value:{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.sample or find_sample()
    if root is None:
        print("CHAOS sample not found: set ORGANSEG_CHAOS_SAMPLE (or ../shared/chaos-sample)")
        return 2
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from real_case_train import main as train_2d
    from real_case_train import slab_geometry, split_slices

    from organseg.config import PostprocessConfig
    from organseg.ensemble.postprocess import probabilities_to_labels
    from organseg.ensemble.sliding import predict_volume
    from organseg.io import discover_cases, load_case
    from organseg.losses import build_loss
    from organseg.metrics import evaluate_masks
    from organseg.models import create_member
    from organseg.organs import ORGAN_LABELS
    from organseg.preprocess import PreprocessConfig, prepare_volume, resize_slices
    from organseg.preprocess.volume_config import VolumeConfig
    from organseg.preprocess.volumes import PatchDataset
    from organseg.train.steps import plain_step
    from organseg.train.validation import dice_3d

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    # -- the 2D member, exactly as real_case_train.py --split block trains and scores it
    if args.reuse_2d is not None:
        two_d = json.loads(args.reuse_2d.read_text())["two_d"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "2d.json"
            code = train_2d(
                ["--split", "block", "--val-block", str(args.val_block), "--size", str(args.size),
                 "--epochs", str(args.epochs_2d), "--threads", str(args.threads), "--seed", str(args.seed),
                 "--case", args.case, "--json", str(out)]
                + (["--sample", str(args.sample)] if args.sample else [])
            )  # fmt: skip
            if code:
                return code
            two_d = json.loads(out.read_text())

    # -- the 3D member on the same case and slab
    ref = next(r for r in discover_cases(root) if r.case_id == args.case)
    case = load_case(ref)
    liver = ORGAN_LABELS["liver"]
    truth_full = case.label.array == liver
    prepared = prepare_volume(case.image, PreprocessConfig(size=args.size))
    labels = resize_slices(case.label.array, args.size, order=0)
    labels = np.where(labels == liver, liver, 0).astype(np.uint8)
    liver_slices = np.flatnonzero(truth_full.any(axis=(1, 2)))
    _, val_idx = split_slices(len(labels), "block", block=args.val_block, liver_slices=liver_slices)
    assert val_idx.tolist() == two_d["val_slices"], "both members must hold out the same slab"
    first, last = int(val_idx[0]), int(val_idx[-1]) + 1
    image = np.ascontiguousarray(prepared.array.transpose(1, 0, 2, 3))  # (C, Z, H, W)
    parts = {
        "above": (image[:, :first], labels[:first]),
        "below": (image[:, last:], labels[last:]),
    }
    parts = {k: v for k, v in parts.items() if v[1].shape[0] > 0}
    spacing = prepared.prepared_geometry.spacing  # the member works on the prepared grid itself
    cfg = VolumeConfig(
        spacing=spacing,
        patch=tuple(args.patch),
        patches_per_volume=max(1, args.patches_per_epoch // len(parts)),
        foreground_fraction=args.foreground,
        augment=["flip", "rotate", "scale", "intensity_shift"],
        overlap=0.5,
    )
    dataset = PatchDataset(_Volumes(parts), list(parts), ["liver"], cfg, 1, seed=args.seed)
    kwargs: dict[str, Any] = {"base_channels": args.width}
    kwargs.update({"depth": 3} if args.arch == "unet3d_fullres" else {"blocks": (2, 2, 2)})
    model = create_member(args.arch, 1, 1, **kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = -(-len(dataset) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps, pct_start=0.15
    )
    step = plain_step(model, build_loss("dice_bce", 0.5), optimizer)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    train_started = time.perf_counter()
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        model.train()
        losses = []
        for x, y in loader:
            losses.append(step(x, y).total)
            scheduler.step()
        print(f"3D epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f}", flush=True)
    train_seconds = time.perf_counter() - train_started
    tick = time.perf_counter()
    probs = predict_volume(model, prepared.array, spacing, cfg, 1).numpy()
    predict_seconds = time.perf_counter() - tick
    restored = prepared.restore(probs)[val_idx]
    val_truth = truth_full[val_idx]
    raw = restored[:, 0] >= 0.5
    post = probabilities_to_labels(restored, ["liver"], PostprocessConfig()) == liver
    geometry = slab_geometry(case.image.geometry, first, 1)
    chaos = evaluate_masks(
        val_truth.astype(np.uint8) * liver, post.astype(np.uint8) * liver, geometry, ["liver"]
    )["liver"].to_dict()
    three_d = {
        "arch": args.arch,
        "kwargs": kwargs,
        "parameters": n_params,
        "patch": list(args.patch),
        "epochs": args.epochs,
        "val_dice_liver_3d": dice_3d(raw, val_truth),
        "val_dice_liver_3d_postprocessed": dice_3d(post, val_truth),
        "chaos_liver": chaos,
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
    }

    rows = [(f"2D {two_d['arch']}", two_d), (f"3D {args.arch}", three_d)]
    print(
        f"\n{args.case}: held-out slab of {len(val_idx)} contiguous slices {first}..{last - 1} (512²)"
    )
    header = f"{'member':26} {'Dice':>6} {'post':>6} {'RAVD%':>7} {'ASSD':>6} {'MSSD':>6} {'score':>6} {'train s':>8}"
    print(header)
    for label, r in rows:
        c = r["chaos_liver"]
        print(
            f"{label:26} {r['val_dice_liver_3d']:6.3f} {r['val_dice_liver_3d_postprocessed']:6.3f} "
            f"{_num(c['ravd'], 7, 2)} {_num(c['assd'], 6, 2)} {_num(c['mssd'], 6, 2)} "
            f"{_num(c['score'], 6, 1)} {r['train_seconds']:8.0f}"
        )
    result = {
        "benchmark": "real_case_3d",
        "case": args.case,
        "size": args.size,
        "val_slices": [first, last - 1],
        "two_d": {k: two_d[k] for k in ("arch", "parameters", "epochs", "val_dice_liver_3d",
                                        "val_dice_liver_3d_postprocessed", "chaos_liver", "train_seconds",
                                        "val_slices")},
        "three_d": three_d,
        "total_seconds": time.perf_counter() - started,
    }  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
