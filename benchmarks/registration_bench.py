"""How well the rigid T2 → T1 registration works on the synthetic MR data.

Two measurements, one JSON line of their figures at the end:

1. **Known rigid motion.** T2-SPIR rendered from a case's T1 anatomy, moved by a known rotation and
   translation and sampled on its own grid (``organseg.synth.motion.moved_pair``). Residual = distance
   (mm) between where the found and the true transform put 500 liver points; "before" is the header
   geometry alone (no registration).
2. **Synthesised CHAOS cases as written** (``organseg data synth``): T2-SPIR is another breath-hold, so
   the organs moved non-rigidly and the slab is offset. No exact rigid truth exists; the figure is the
   liver Dice between the T1 ground truth and the T2 ground truth carried onto the T1 grid, by the
   headers alone and with the registration found on the images.

    python benchmarks/registration_bench.py [--cases 6] [--size 128] [--slices 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from organseg.io.volume import Geometry, Modality, Volume
from organseg.preprocess.registration import (
    RigidRegistration,
    align_to,
    resample_onto,
)
from organseg.synth.case import make_mr_case
from organseg.synth.motion import _DIRECTION, moved_pair


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def known_motion(cases: int, size: int, slices: int) -> dict[str, float]:
    before, after, seconds = [], [], []
    for seed in range(cases):
        pair = moved_pair(seed, size=size, slices=slices)
        tick = time.perf_counter()
        _, registration = align_to(pair.t1, pair.t2)
        seconds.append(time.perf_counter() - tick)
        b, a = pair.residual_mm(None), pair.residual_mm(registration.transform())
        before.append(b)
        after.append(a)
        print(
            f"moved pair {seed}: residual {b.mean():5.2f} mm → {a.mean():4.2f} mm "
            f"(max {a.max():4.2f}), {seconds[-1]:.2f} s"
        )
    b, a = np.concatenate(before), np.concatenate(after)
    return {
        "pixel_mm": round(float(pair.t1.spacing[0]), 2),
        "slice_mm": round(float(pair.t1.spacing[2]), 2),
        "before_mean_mm": round(float(b.mean()), 2),
        "after_mean_mm": round(float(a.mean()), 2),
        "after_p95_mm": round(float(np.percentile(a, 95)), 2),
        "after_max_mm": round(float(a.max()), 2),
        "seconds_per_pair": round(float(np.mean(seconds)), 2),
    }


def written_cases(cases: int, size: int, slices: int) -> dict[str, float]:
    header, registered = [], []
    for seed in range(cases):
        case = make_mr_case(size, slices, seed)
        t1_series, _, t2_series = case.series

        def volume(series, array, modality=Modality.UNKNOWN) -> Volume:
            geometry = Geometry(series.spacing, series.first_position, _DIRECTION)
            return Volume(np.asarray(array, np.float32), geometry, modality)

        t1 = volume(t1_series, t1_series.real_values(), Modality.MR_T1_IN)
        t2 = volume(t2_series, t2_series.real_values(), Modality.MR_T2SPIR)
        t2_liver = volume(t2_series, t2_series.labels == 1)
        t1_liver = t1_series.labels == 1
        identity = RigidRegistration((0.0,) * 6, (0.0, 0.0, 0.0), 0.0, 0.0, 0, "")
        _, found = align_to(t1, t2)
        for transform, out in ((identity, header), (found, registered)):
            moved = resample_onto(t2_liver, t1, transform).array > 0.5
            out.append(_dice(t1_liver, moved))
        print(f"synth case {seed}: liver Dice T1 vs T2 {header[-1]:.3f} → {registered[-1]:.3f}")
    return {
        "liver_dice_headers": round(float(np.mean(header)), 3),
        "liver_dice_registered": round(float(np.mean(registered)), 3),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slices", type=int, default=24)
    args = p.parse_args(argv)
    figures = {
        "cases": args.cases,
        "size": args.size,
        "known_motion": known_motion(args.cases, args.size, args.slices),
        "synth_cases": written_cases(args.cases, args.size, args.slices),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
