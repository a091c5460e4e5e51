"""Time CHAOS scoring of the real CT case: organseg's EDT path against KD-tree implementations.

Both sides compute the same definition (6-connected erosion borders, world-millimetre distances,
pooled ASSD, maximum MSSD) on the same masks in the same process, and must agree before any timing
is printed. Baselines, written here on purpose so they stay independent of the package:

- ``kdtree``: the straightforward vectorised version — full-volume erosion, ``np.argwhere``, world
  coordinates through the affine, ``scipy.spatial.cKDTree`` both ways;
- ``organizers``: the organizers' structure — the same KD-tree, but world coordinates built one
  voxel at a time in a Python loop as ``CHAOSmetrics.transformToRealCoordinates`` does.

Run: ``python benchmarks/metrics_bench.py [--repeat N]``. The sample is found through
``ORGANSEG_CHAOS_SAMPLE`` or ``../shared/chaos-sample`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from _sample import find_sample
from scipy import ndimage
from scipy.spatial import cKDTree


def kdtree_metrics(
    ref: np.ndarray, pred: np.ndarray, affine: np.ndarray, loop: bool = False
) -> tuple[float, float, float, float]:
    """DICE, RAVD, ASSD, MSSD by erosion borders and KD-tree nearest neighbours in world mm."""
    structure = ndimage.generate_binary_structure(3, 1)
    dice = 2 * np.count_nonzero(ref & pred) / (ref.sum() + pred.sum())
    ravd = abs(int(ref.sum()) - int(pred.sum())) / ref.sum() * 100

    def world(mask: np.ndarray) -> np.ndarray:
        edge = mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=1)
        zyx = np.argwhere(edge)
        if not loop:
            return zyx[:, ::-1] @ affine[:3, :3].T + affine[:3, 3]
        points = []  # one matrix product per voxel, as the organizers' evaluator does
        for z, y, x in zyx:
            points.append((affine @ np.array([x, y, z, 1.0]))[:3])
        return np.array(points)

    r, p = world(ref), world(pred)
    p_to_r, _ = cKDTree(r).query(p)
    r_to_p, _ = cKDTree(p).query(r)
    assd = (p_to_r.sum() + r_to_p.sum()) / (len(p_to_r) + len(r_to_p))
    return dice, ravd, assd, max(p_to_r.max(), r_to_p.max())


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), times, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per method (best counts)")
    args = parser.parse_args()

    sample = find_sample()
    if sample is None:
        message = (
            "metrics_bench: real CHAOS sample not found; set ORGANSEG_CHAOS_SAMPLE to a folder "
            "holding Train_Sets/CT/1 (or place it at ../shared/chaos-sample beside the repository)"
        )
        print(message, file=sys.stderr)
        return 1 if os.environ.get("ORGANSEG_REQUIRE_SAMPLE") == "1" else 0

    from organseg.metrics.chaos import evaluate_organ
    from organseg.metrics.inputs import load_pair

    case = sample / "Train_Sets" / "CT" / "1"
    data = load_pair(
        case / "Ground", sample / "sample-submission" / "CT" / "1", dicom=case / "DICOM_anon"
    )
    ref, pred = data.ref_labels == 1, data.pred_labels == 1
    affine = data.geometry.affine()
    print(f"case: {case} {ref.shape} voxels, spacing {data.geometry.spacing} mm")

    evaluate_organ(ref, pred, data.geometry)  # warm-up (thread pools, first-touch allocations)
    ours_t, ours_all, ours = best_of(lambda: evaluate_organ(ref, pred, data.geometry), args.repeat)
    kd_t, kd_all, kd = best_of(lambda: kdtree_metrics(ref, pred, affine), args.repeat)
    loop_t, _, loop = best_of(lambda: kdtree_metrics(ref, pred, affine, loop=True), 1)

    ours_values = (ours.dice, ours.ravd, ours.assd, ours.mssd)
    for name, values in (("kdtree", kd), ("organizers", loop)):
        if not np.allclose(ours_values, values, rtol=1e-9, atol=0):
            print(f"MISMATCH with {name}: ours {ours_values} vs {values}", file=sys.stderr)
            return 1
    dice, ravd, assd, mssd = ours_values
    print(f"DICE={dice:.3f} RAVD={ravd:.3f} ASSD={assd:.3f} MSSD={mssd:.3f} (all methods agree)")

    def show(label: str, best: float, runs: list[float]) -> None:
        print(
            f"{label:<42} best {best * 1000:8.1f} ms   median {statistics.median(runs) * 1000:8.1f} ms"
        )

    show("organseg (EDT over the borders' box)", ours_t, ours_all)
    show("cKDTree, vectorised coordinates", kd_t, kd_all)
    show("cKDTree, per-voxel coordinate loop", loop_t, [loop_t])
    print(f"speed-up vs vectorised cKDTree:        {kd_t / ours_t:6.1f}x")
    print(f"speed-up vs organizers-style loop:     {loop_t / ours_t:6.1f}x")
    print(
        json.dumps(
            {
                "dice": dice,
                "ravd": ravd,
                "assd": assd,
                "mssd": mssd,
                "organseg_best_s": round(ours_t, 5),
                "kdtree_best_s": round(kd_t, 5),
                "organizers_loop_s": round(loop_t, 5),
                "speedup_vs_kdtree_x": round(kd_t / ours_t, 2),
                "speedup_vs_organizers_x": round(loop_t / ours_t, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
