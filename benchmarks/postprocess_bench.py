"""Time the ensemble assembly (members' maps → labels on the input grid + report figures), old path vs new.

One run, same maps, same process: the float32 path the ensemble used before (mean stack, bilinear restore of
the whole (Z, K, H, W) stack, scipy labelling; kept in ``_legacy_postprocess.py``) against
``organseg.ensemble.postprocess.labels_from_member_maps``. Both must give identical labels, organ voxel
counts and disagreement before any timing is printed.

Two kinds of member maps for one 96×512² CT volume (liver, four members, uint8 p·255 as members answer):

- ``realistic``: trained-looking members — smooth probabilities around the phantom's liver, each member a
  little shifted, with a few false-positive blobs that hysteresis and the largest-component rule remove;
- ``noisy``: untrained or unsure members — every map hovers around 0.5 with smooth and per-voxel noise, so
  the candidate mask is dense and splits into many components over the whole volume (the worst case for
  labelling; what freshly initialised members produce).

    python benchmarks/postprocess_bench.py [--slices 96] [--size 512] [--network-size 512] [--repeat 5]

``--network-size`` below ``--size`` adds the bilinear restore (network grid ≠ input grid). The last line is
one JSON object with the figures (``realistic_new_s``, ``noisy_new_s``, ...).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

GOALS_S = {"realistic": 0.15, "noisy": 0.3}


def _upsample(array: np.ndarray, size: int) -> np.ndarray:
    from organseg.preprocess.resample import resize_slices

    return resize_slices(array, size, order=1)


def member_maps(slices: int, size: int, members: int, kind: str, seed: int = 0) -> list[np.ndarray]:
    """``members`` uint8 ``(Z, 1, size, size)`` liver maps of one CT phantom (see the module docstring)."""
    from organseg.organs import ORGAN_LABELS
    from organseg.synth import make_phantom

    low = 128 if size >= 128 else size
    _, labels, _ = make_phantom("CT", size=low, slices=slices, seed=1)
    liver = (labels == ORGAN_LABELS["liver"]).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(members):
        if kind == "realistic":
            p = ndimage.gaussian_filter(liver, sigma=0.8)
            p = ndimage.shift(p, (0, *rng.uniform(-0.6, 0.6, 2)), order=1)
            for _ in range(3):  # false-positive blobs, some confident enough to seed
                centre = rng.uniform(0, 1, 3) * np.array(p.shape)
                zz, yy, xx = np.ogrid[: p.shape[0], : p.shape[1], : p.shape[2]]
                r2 = (
                    ((zz - centre[0]) / 2) ** 2
                    + ((yy - centre[1]) / 3) ** 2
                    + ((xx - centre[2]) / 3) ** 2
                )
                p = np.maximum(p, rng.uniform(0.55, 0.9) * np.exp(-r2).astype(np.float32))
            p = _upsample(p[:, None], size)[:, 0]
            p += rng.normal(0, 0.01, p.shape).astype(np.float32)
        elif kind == "noisy":
            smooth = ndimage.gaussian_filter(rng.standard_normal(liver.shape, np.float32), 1.0)
            smooth /= smooth.std()
            p = 0.45 + 0.12 * ndimage.gaussian_filter(liver, 0.8) + 0.08 * smooth
            p = _upsample(p[:, None].astype(np.float32), size)[:, 0]
            p += rng.normal(0, 0.05, p.shape).astype(np.float32)
        else:
            raise ValueError(kind)
        out.append(np.round(np.clip(p, 0, 1) * 255).astype(np.uint8)[:, None])
    return out


def _times(fn: Callable[[], object], repeat: int) -> tuple[list[float], object, float]:
    """Wall seconds per run, the last result, and the median CPU seconds (all threads) per run.

    CPU seconds say what the work costs when other processes share the cores (wall time then grows).
    """
    times, cpu, result = [], [], None
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return times, result, statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=96)
    parser.add_argument("--size", type=int, default=512, help="input grid (H = W)")
    parser.add_argument(
        "--network-size", type=int, default=None, help="network grid (default: --size)"
    )
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the new path")
    parser.add_argument("--old-repeat", type=int, default=2, help="timed runs of the old path")
    options = parser.parse_args()

    import _legacy_postprocess as legacy

    from organseg.config import PostprocessConfig
    from organseg.ensemble.postprocess import labels_from_member_maps

    net = options.network_size or options.size
    grid = (options.size, options.size)
    cfg = PostprocessConfig(threshold=0.5, component_threshold=0.6, largest_component=True)
    organs = ["liver"]
    figures: dict[str, object] = {
        "slices": options.slices,
        "size": options.size,
        "network_size": net,
        "members": options.members,
    }
    print(
        f"{options.members} members' liver maps, {options.slices}×{net}² → labels on "
        f"{options.slices}×{options.size}²"
    )
    for kind in ("realistic", "noisy"):
        maps = member_maps(options.slices, net, options.members, kind)
        per_organ = {"liver": [m[:, 0] for m in maps]}
        old_times, (old_labels, old_voxels, old_unc), old_cpu = _times(
            lambda p=per_organ: legacy.assemble(p, organs, cfg, grid), options.old_repeat
        )
        labels_from_member_maps(
            per_organ, organs, cfg, grid
        )  # warm-up (allocator, first-call costs)
        new_times, new, new_cpu = _times(
            lambda p=per_organ: labels_from_member_maps(p, organs, cfg, grid), options.repeat
        )
        if not (
            np.array_equal(old_labels, new.labels)
            and old_voxels == new.voxels
            and old_unc == new.uncertainty
        ):
            print(f"{kind}: the new path disagrees with the old one", file=sys.stderr)
            return 1
        old_s, new_s = statistics.median(old_times), statistics.median(new_times)
        candidate = float(
            np.mean(sum(m[:, 0].astype(np.uint16) for m in maps) >= 128 * options.members)
        )
        print(
            f"{kind:9s}: old {old_s:.3f} s, new {new_s:.3f} s (best {min(new_times):.3f}; CPU "
            f"{old_cpu:.3f} → {new_cpu:.3f} s) = "
            f"{old_s / new_s:.1f}× faster; goal ≤ {GOALS_S[kind]} s "
            f"{'met' if new_s <= GOALS_S[kind] else 'MISSED'}; identical output; "
            f"{100 * candidate:.1f} % of voxels candidates, liver {new.voxels['liver']} voxels, "
            f"disagreement {new.uncertainty['liver']:.3f}"
        )
        figures[f"{kind}_old_s"] = round(old_s, 4)
        figures[f"{kind}_new_s"] = round(new_s, 4)
        figures[f"{kind}_new_best_s"] = round(min(new_times), 4)
        figures[f"{kind}_old_cpu_s"] = round(old_cpu, 4)
        figures[f"{kind}_new_cpu_s"] = round(new_cpu, 4)
        figures[f"{kind}_speedup_x"] = round(old_s / new_s, 2)
        figures[f"{kind}_goal_met"] = new_s <= GOALS_S[kind]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
