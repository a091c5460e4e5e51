"""Whole-volume inference time of a 3D member (MONAI sliding window) vs a 2D member, at two volume sizes.

Both members run exactly as the ensemble runs them (``MemberRunner``): the 2D member over every slice of
the prepared volume in batches, the 3D member resampled to its spacing, through Gaussian-weighted
overlapping windows and back to the prepared grid. Weights are freshly initialised (timing only). The
prepared volume is 512² in-plane at 0.78 mm (a typical CHAOS CT field of view) with 96 slices of 2.5 mm,
and a half-length one (48 slices) shows how the time grows with the volume.

Defaults are CPU-sized: narrow networks (``--width``) at the recipes' spacing and patch. ``--recipe``
uses the recipes' full widths (what a GPU would run). Ends with one JSON line of the figures.

    python benchmarks/sliding_window_bench.py [--threads 2] [--mirror] [--recipe]

On the 2-core CPU box (busy): per 512²×96 volume the 2D member took 29 s, unet3d_fullres 38 s (1.3×),
resunet3d_ps 47 s (1.6×); halving the volume to 48 slices halves the 3D members' time (1.9×, 2.1×).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--width", type=int, default=8, help="starting channels of the CPU-sized networks"
    )
    p.add_argument("--recipe", action="store_true", help="the recipes' full widths")
    p.add_argument("--mirror", action="store_true", help="test-time mirroring for the 3D member")
    p.add_argument("--size", type=int, default=512, help="prepared in-plane size")
    p.add_argument("--slices", type=int, default=96)
    p.add_argument("--repeats", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see real_case_train.py
    import numpy as np
    import torch

    from organseg.ensemble.members import MemberRunner
    from organseg.ensemble.spec import MemberEntry
    from organseg.models import create_member
    from organseg.models.summary import count_gflops, count_parameters
    from organseg.preprocess.volume_config import VolumeConfig
    from organseg.preprocess.volumes import member_shape

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width = None if args.recipe else args.width
    members = {
        "attention_unet (2D)": ("attention_unet", {"base_channels": width or 32, "depth": 4}, None),
        "unet3d_fullres": (
            "unet3d_fullres",
            {"base_channels": width or 32, "depth": 5},
            VolumeConfig(spacing=(1.5, 1.5, 2.5), patch=(80, 160, 160), mirror=args.mirror),
        ),
        "resunet3d_ps": (
            "resunet3d_ps",
            {"base_channels": width or 16},
            VolumeConfig(spacing=(1.4, 1.4, 2.0), patch=(64, 192, 192), mirror=args.mirror),
        ),
    }
    spacing = (400.0 / args.size, 400.0 / args.size, 2.5)  # a 400 mm field of view
    sizes = [args.slices // 2, args.slices]
    rows, figures = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (arch, kwargs, volume) in members.items():
            model = create_member(arch, 1, 1, **kwargs)
            (Path(tmp) / arch).mkdir()
            torch.save(model.state_dict(), Path(tmp) / arch / "model.pt")
            entry = MemberEntry(
                name=arch, arch=arch, kwargs=kwargs, in_channels=1, organs=["liver"],
                modalities=["CT"], weights=f"{arch}/model.pt",
                kind="3d" if volume else "2d", volume=volume,
            )  # fmt: skip
            runner = MemberRunner(tmp, entry, device="cpu", batch_size=8)
            per_size = {}
            for z in sizes:
                prepared = np.random.default_rng(0).random((z, 1, args.size, args.size))
                prepared = prepared.astype(np.float16)
                runner.run(
                    prepared[: min(z, 4)] if volume is None else prepared[:8], spacing
                )  # warm
                times = []
                for _ in range(args.repeats):
                    tick = time.perf_counter()
                    out = runner.run(prepared, spacing)
                    times.append(time.perf_counter() - tick)
                assert out.shape == (z, 1, args.size, args.size)
                per_size[z] = min(times)
            if volume is None:
                gflops = count_gflops(model, 1, args.size) * args.slices
                work = f"{args.slices} slices of {args.size}²"
            else:
                grid = member_shape((args.slices, args.size, args.size), spacing, volume.spacing)
                gflops = count_gflops(model, 1, patch=volume.patch)
                work = (
                    f"grid {grid[0]}×{grid[1]}×{grid[2]}, patch {'×'.join(map(str, volume.patch))}"
                )
            rows.append((label, count_parameters(model), work, per_size))
            figures[arch] = {
                "parameters": count_parameters(model),
                "seconds": {str(z): round(t, 3) for z, t in per_size.items()},
                "growth": round(per_size[sizes[1]] / per_size[sizes[0]], 3),
                "gflops_per_window_or_volume": round(gflops, 1),
            }
    base = rows[0][3][sizes[1]]
    print(f"\nwhole-volume inference, {args.size}² prepared slices, CPU {args.threads} threads")
    print(f"{'member':22} {'params':>8} {'s @' + str(sizes[0]):>9} {'s @' + str(sizes[1]):>9} "
          f"{'growth':>7} {'vs 2D':>7}  work")  # fmt: skip
    for label, params, work, per_size in rows:
        print(
            f"{label:22} {params / 1e6:7.2f}M {per_size[sizes[0]]:9.2f} {per_size[sizes[1]]:9.2f} "
            f"{per_size[sizes[1]] / per_size[sizes[0]]:7.2f} {per_size[sizes[1]] / base:7.2f}  {work}"
        )
    result = {
        "benchmark": "sliding_window",
        "size": args.size,
        "slices": sizes,
        "threads": args.threads,
        "width": width,
        "mirror": args.mirror,
        "members": figures,
        "ratio_3d_vs_2d": {
            arch: round(
                f["seconds"][str(sizes[1])] / figures["attention_unet"]["seconds"][str(sizes[1])], 3
            )
            for arch, f in figures.items()
            if arch != "attention_unet"
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
