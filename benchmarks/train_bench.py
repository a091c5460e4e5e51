"""Training two ensemble members at the same time (one Ray Train run each) against one after the other.

Prints the wall time of both schedules on this machine and their ratio, plus each member's training
throughput in slices/s. Both schedules run the same members with the same resources on one local Ray
cluster, so the ratio is measured in one run.

    python benchmarks/train_bench.py [--epochs 3] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console


def experiment(root: Path, epochs: int, size: int):
    from organseg.config import parse_config

    member = {
        "in_channels": 1,
        "epochs": epochs,
        "batch_size": 8,
        "optimizer": {"lr": 0.002},
        "cpus_per_worker": 1,
    }
    return parse_config(
        {
            "name": "train-bench",
            "task": 2,
            "storage_path": str(root / "runs"),
            "dataset": {
                "synthetic": {"ct": 4, "size": size, "slices": 16, "seed": 5},
                "val_fraction": 0.25,
                "cache_dir": str(root / "cache"),
            },
            "preprocess": {"size": size},
            "augment": {"enabled": True},
            "members": [
                {
                    "name": "dualtail",
                    "arch": "dualtail",
                    "kwargs": {"base_channels": 8, "depth": 4},
                    **member,
                },
                {
                    "name": "attention-unet",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 8, "depth": 4},
                    **member,
                },
            ],
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    options = parser.parse_args()

    from organseg.runtime import ray_session
    from organseg.train.launcher import train_experiment

    quiet = Console(stderr=True, quiet=True)
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        root = Path(tmp)
        config = experiment(root / "parallel", options.epochs, options.size)
        from organseg.train.data import prepare_data

        prepare_data(config)  # data and cache first: the schedules differ only in training
        started = time.perf_counter()
        parallel = train_experiment(config, console=quiet)
        parallel_s = time.perf_counter() - started

        sequential_s, alone = 0.0, {}
        for name in [m.name for m in config.members]:
            solo = experiment(root / f"solo-{name}", options.epochs, options.size)
            solo.dataset.cache_dir = config.dataset.cache_dir  # same cache, already built
            solo.dataset = solo.dataset.model_copy(
                update={"path": config.cache_dir().parent / "data", "synthetic": None}
            )
            started = time.perf_counter()
            alone[name] = train_experiment(solo, members=[name], console=quiet).outcomes[0]
            sequential_s += time.perf_counter() - started

    print(
        f"two members, {options.epochs} epochs each, {options.size}² slices, 1 CPU worker per member"
    )
    figures: dict[str, object] = {"epochs": options.epochs, "size": options.size, "members": {}}
    for outcome in parallel.outcomes:
        rate = statistics.mean(h["train_slices_per_s"] for h in outcome.history)
        solo_rate = statistics.mean(h["train_slices_per_s"] for h in alone[outcome.name].history)
        print(
            f"  {outcome.name:16s} {rate:7.1f} slices/s side by side, {solo_rate:7.1f} slices/s alone"
        )
        figures["members"][outcome.name] = {  # type: ignore[index]
            "parallel_slices_per_s": round(rate, 2),
            "alone_slices_per_s": round(solo_rate, 2),
        }
    print(f"  in parallel:       {parallel_s:7.1f} s wall")
    print(f"  one after another: {sequential_s:7.1f} s wall")
    print(f"  parallel speed-up: {sequential_s / parallel_s:.2f}x")
    figures.update(
        parallel_s=round(parallel_s, 2),
        sequential_s=round(sequential_s, 2),
        parallel_over_sequential_x=round(sequential_s / parallel_s, 3),
    )
    print(json.dumps(figures))
    return 0 if parallel.ok else 1


if __name__ == "__main__":
    sys.exit(main())
