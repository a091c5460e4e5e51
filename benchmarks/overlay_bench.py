"""Seconds to write overlay PNGs (auto slices + montage) and a DICOM-SEG for the real CHAOS CT case.

The goal for overlays is "well under 2 s" for a 78x512x512 case; the script prints the median time
and its ratio to that goal (<1: faster than the goal). The ground-truth liver, shifted by a few
pixels, stands in for a prediction so both the organ fill and the reference contour are drawn.

    python benchmarks/overlay_bench.py [--repeats 5] [--out DIR]

The case is ``$ORGANSEG_CHAOS_SAMPLE/Train_Sets/CT/1`` or ``../shared/chaos-sample`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _sample import find_case

from organseg.io import discover_cases, load_case
from organseg.io.dicomseg import write_dicom_seg
from organseg.viz import render_overlays

OVERLAY_GOAL_S = 2.0


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="Keep the outputs here.")
    args = parser.parse_args()
    case_dir = find_case()
    if case_dir is None:
        print("real CHAOS sample not found; set ORGANSEG_CHAOS_SAMPLE", file=sys.stderr)
        return 1
    ref = discover_cases(case_dir)[0]
    case = load_case(ref)
    prediction = case.label.with_array(np.roll(case.label.array, 4, axis=2))
    out = args.out or Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    paths: list[Path] = []

    def overlays() -> None:
        paths[:] = render_overlays(case.image, prediction, case.label, out_dir=out / "overlay")

    def dicom_seg() -> None:
        write_dicom_seg(prediction, ref.image_dir, out / "prediction.dcm")

    overlay_s = timed(overlays, args.repeats)
    seg_s = timed(dicom_seg, max(1, args.repeats // 2))
    z, y, x = case.image.shape
    print(f"case {z}x{y}x{x}; outputs in {out}")
    print(
        f"overlays ({len(paths) - 1} slices + montage): {overlay_s:.3f} s median; "
        f"ratio to the {OVERLAY_GOAL_S:.0f} s goal {overlay_s / OVERLAY_GOAL_S:.2f}"
    )
    size_mb = (out / "prediction.dcm").stat().st_size / 1e6
    print(f"DICOM-SEG ({size_mb:.1f} MB): {seg_s:.3f} s median")
    print(
        json.dumps(
            {
                "overlays_s": round(overlay_s, 4),
                "overlay_goal_ratio": round(overlay_s / OVERLAY_GOAL_S, 3),
                "dicom_seg_s": round(seg_s, 4),
                "dicom_seg_mb": round(size_mb, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
