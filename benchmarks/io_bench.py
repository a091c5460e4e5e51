"""Slices per second for reading the real CHAOS CT series and for the cached slice dataset.

Each is compared with a plain pydicom loop over the same files (``dcmread`` per file, rescale to HU,
``np.stack``; for the dataset also the CT window per slice), printed as a ratio (>1: organseg faster).
Files are read once before timing, so both sides run from the page cache.

    python benchmarks/io_bench.py [--repeats 5] [--size 256]

The case is ``$ORGANSEG_CHAOS_SAMPLE/Train_Sets/CT/1`` or ``../shared/chaos-sample`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import torch
from _sample import REPO_ROOT, find_case

from organseg.io import discover_cases, read_dicom_series
from organseg.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    SliceAugmenter,
    SliceCache,
    SliceDataset,
    ct_window,
)


def pydicom_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    slope, intercept = (
        float(getattr(ds, "RescaleSlope", 1)),
        float(getattr(ds, "RescaleIntercept", 0)),
    )
    return ds.pixel_array.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def pydicom_volume(files: list[Path]) -> np.ndarray:
    return np.stack([pydicom_hu(f) for f in files])


def pydicom_windowed_slices(files: list[Path], lo: float, hi: float) -> list[np.ndarray]:
    return [ct_window(pydicom_hu(f), lo, hi) for f in files]


def best_rate(fn: Callable[[], object], n_slices: int, repeats: int) -> tuple[float, float]:
    """(median, best) slices/s over ``repeats`` timed runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(n_slices / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256, help="PreprocessConfig.size for the cache")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker

    case = find_case()
    if case is None:
        print(
            "io_bench: real CHAOS CT case not found; set ORGANSEG_CHAOS_SAMPLE to a folder holding "
            f"Train_Sets/CT/1 (looked in $ORGANSEG_CHAOS_SAMPLE and {REPO_ROOT.parent / 'shared' / 'chaos-sample'})",
            file=sys.stderr,
        )
        return 2
    dicom_dir = case / "DICOM_anon"
    files = sorted(p for p in dicom_dir.iterdir() if p.suffix == ".dcm")
    n = len(files)
    cfg = PreprocessConfig(size=args.size)

    # Warm the page cache and check both readers agree before timing anything.
    ours = read_dicom_series(dicom_dir).array
    theirs = pydicom_volume(files)
    if not np.array_equal(ours.astype(np.float32), theirs):
        print("io_bench: organseg and pydicom disagree on the pixels; not timing", file=sys.stderr)
        return 1

    rows: list[tuple[str, float, float, float]] = []
    read_rate = best_rate(lambda: read_dicom_series(dicom_dir), n, args.repeats)
    loop_rate = best_rate(lambda: pydicom_volume(files), n, args.repeats)
    rows.append(
        ("read series: organseg.io.read_dicom_series", *read_rate, read_rate[0] / loop_rate[0])
    )
    rows.append(("read series: pydicom dcmread+rescale+stack", *loop_rate, 1.0))

    with tempfile.TemporaryDirectory() as tmp:
        refs = discover_cases(case)
        start = time.perf_counter()
        cache = SliceCache.build(refs, tmp, cfg, ["liver"])
        first_build = time.perf_counter() - start
        start = time.perf_counter()
        SliceCache.build(refs, tmp, cfg, ["liver"])
        reuse = time.perf_counter() - start

        dataset = SliceDataset(cache, ["CT/1"], ["liver"])
        augmented = SliceDataset(
            cache, ["CT/1"], ["liver"], augment=SliceAugmenter(AugmentConfig())
        )

        def read_all(ds: SliceDataset) -> None:
            for i in range(len(ds)):
                ds[i]

        read_all(dataset)  # open the memory maps once, as a worker would
        data_rate = best_rate(lambda: read_all(dataset), len(dataset), args.repeats)
        aug_rate = best_rate(lambda: read_all(augmented), len(augmented), args.repeats)
        lo, hi = cfg.ct_window
        window_rate = best_rate(lambda: pydicom_windowed_slices(files, lo, hi), n, args.repeats)
        rows.append(
            ("slice dataset (cached, no augmentation)", *data_rate, data_rate[0] / window_rate[0])
        )
        rows.append(
            (
                "slice dataset (cached, default augmentation)",
                *aug_rate,
                aug_rate[0] / window_rate[0],
            )
        )
        rows.append(("slices: pydicom dcmread+rescale+window", *window_rate, 1.0))

    print(f"case {case} ({n} slices, {ours.shape[1]}x{ours.shape[2]}); cache size {cfg.size}; "
          f"{args.repeats} repeats, one process, torch on 1 thread as in a DataLoader worker")  # fmt: skip
    print(f"{'':46} {'median sl/s':>12} {'best sl/s':>10} {'ratio':>7}")
    for name, median, best, ratio in rows:
        print(f"{name:46} {median:12.0f} {best:10.0f} {ratio:6.1f}x")
    print(f"cache: first build {first_build:.2f} s, up-to-date rebuild {reuse * 1000:.1f} ms")
    print("ratio: median slices/s against the pydicom loop above it")
    figures = {
        re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"): {
            "median_slices_per_s": round(median, 1),
            "best_slices_per_s": round(best, 1),
            "ratio": round(ratio, 2),
        }
        for name, median, best, ratio in rows
    }
    figures["cache_first_build_s"] = round(first_build, 3)
    figures["cache_rebuild_s"] = round(reuse, 4)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
