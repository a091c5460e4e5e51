"""Training two ensemble members at the same time against one after the other, and each member's slices/s.

Two engines, same figures:

- ``--engine ray`` (default): one Ray Train run per member on a local Ray cluster, as ``organseg train``
  runs them; prints both schedules' wall time, their ratio and each member's slices/s.
- ``--engine core``: the Ray-free trainer core in plain processes (what a Ray Train worker runs), for
  machines without Ray (the GPU suite). Per member and precision: training slices/s over ``--steps``
  real steps after a warm-up step (the loader's start-up and the warm-up outside the timed window), the
  DataLoader's slices/s on its own (the loader must outpace the member) and the share of time the step
  waited for data; then two members sharing the device at once (their timed windows start together)
  against one after the other. ``--jsonl FILE`` appends each member's figures as soon as they exist.

    python benchmarks/train_bench.py [--epochs 3] [--size 64]
    python benchmarks/train_bench.py --engine core --gpu --size 512 --precisions bf16,fp32

The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


GPU_MEMBERS = {  # the four 512² CT members of configs/task2-liver-ct.yaml (no downloads: no weights)
    "ternausnet": {"arch": "ternausnet", "in_channels": 3},
    "linknet34": {"arch": "linknet34", "in_channels": 3},
    "unet-resnet50": {"arch": "unet_resnet50", "in_channels": 3},
    "unet-se-resnet50": {"arch": "unet_se_resnet50", "in_channels": 3},
}


def core_experiment(root: Path, size: int, gpu: bool, batch: int, steps: int = 10, names=None):
    from organseg.config import parse_config

    members = (
        GPU_MEMBERS
        if gpu
        else {
            "dualtail": {"arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 4}},
            "attention-unet": {
                "arch": "attention_unet",
                "kwargs": {"base_channels": 8, "depth": 4},
            },
        }
    )
    if names:  # any of the CT members or the small CPU ones, by name
        known = {**GPU_MEMBERS, **members}
        members = {n: known[n] for n in names}
    # three training cases (val_fraction 0.25 of four) with enough slices for a warm-up step and
    # ``steps`` timed steps without the loader running dry (a new epoch would restart its workers)
    slices = max(24, -(-(steps + 2) * batch // 3))
    return parse_config(
        {
            "name": "train-bench-core",
            "task": 2,
            "storage_path": str(root / "runs"),
            "dataset": {
                "synthetic": {"ct": 4, "size": min(size, 128), "slices": slices, "seed": 5},
                "val_fraction": 0.25,
                "cache_dir": str(root / "cache"),
            },
            "preprocess": {"size": size},
            "augment": {"enabled": True},
            "members": [
                {
                    "name": n,
                    **m,
                    "batch_size": batch,
                    "use_gpu": gpu,
                    "cpus_per_worker": 8 if gpu else 1,
                }
                for n, m in members.items()
            ],
        }
    )


def timed_steps(trainer: Any, steps: int, barrier: Any = None) -> dict[str, float]:
    """``steps`` real training steps after one warm-up step, timed from the first step after it.

    The loader's workers start and the warm-up step (cuDNN autotuning, allocator) runs before the
    clock starts; ``barrier`` (two members sharing a device) lines up the timed windows.
    """
    import torch

    device = trainer.place.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    memory = torch.channels_last if trainer.channels_last else torch.preserve_format
    trainer.model.train()
    batches = iter(trainer.loader)

    def step() -> tuple[int, float]:
        waited = time.perf_counter()
        x, y = next(batches)
        wait = time.perf_counter() - waited
        x = x.to(device, non_blocking=True).contiguous(memory_format=memory)
        trainer.step(x, y.to(device, non_blocking=True))
        return x.shape[0], wait

    step()
    sync()
    if barrier is not None:
        barrier.wait()
    seen, waited, started = 0, 0.0, time.perf_counter()
    for _ in range(steps):
        n, wait = step()
        seen, waited = seen + n, waited + wait
    sync()
    elapsed = time.perf_counter() - started
    return {"train_slices_per_s": seen / elapsed, "data_wait_fraction": waited / elapsed,
            "steps": steps, "timed_s": elapsed}  # fmt: skip


def core_member(
    jobs: list[dict], steps: int, results: Any = None, barrier: Any = None
) -> list[dict[str, Any]]:
    """Each job's member in this process, one after the other (one process per member, whatever the
    precisions: start-up is paid once): the loader alone, then ``steps`` timed training steps."""
    import gc

    import torch

    from organseg.train.core import MemberTrainer, Placement
    from organseg.train.payload import TrainPayload

    out = []
    for job in jobs:
        payload = TrainPayload.model_validate(job)
        device = torch.device("cuda" if payload.member.use_gpu else "cpu")
        trainer = MemberTrainer(payload, Placement(device=device))
        batches = iter(trainer.loader)  # the loader alone, after its workers are up
        next(batches)
        started, loaded = time.perf_counter(), 0
        for _ in range(steps):
            loaded += next(batches)[0].shape[0]
        loader_rate = loaded / (time.perf_counter() - started)
        del batches
        figures = timed_steps(trainer, steps, barrier)
        out.append(
            {
                "member": payload.member.name,
                **figures,
                "loader_slices_per_s": loader_rate,
                "precision": trainer.precision.name,
            }
        )
        del trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if results is not None:
        results.put(out)
    return out


def core_main(options: argparse.Namespace) -> int:
    import multiprocessing as mp

    from organseg.tasks import get_task
    from organseg.train.data import prepare_data
    from organseg.train.payload import TrainPayload

    signal.signal(
        signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum)
    )  # run finally blocks
    ctx = mp.get_context("spawn")  # CUDA cannot be forked; a fresh process per run, as a worker is
    figures: dict[str, Any] = {
        "engine": "core",
        "size": options.size,
        "gpu": options.gpu,
        "members": {},
    }
    context = {k: figures[k] for k in ("size", "gpu")} | {
        "batch": options.batch,
        "steps": options.steps,
    }

    def emit(phase: str, line: dict[str, Any]) -> None:
        text = json.dumps({"bench": "train", "phase": phase, **context, **line})
        print(text, flush=True)
        if options.jsonl is not None:
            with options.jsonl.open("a") as stream:
                stream.write(text + "\n")

    names = options.members.split(",") if options.members else None
    with tempfile.TemporaryDirectory() as tmp:
        config = core_experiment(
            Path(tmp), options.size, options.gpu, options.batch, options.steps, names
        )
        data = prepare_data(config)

        def payload(member, precision: str) -> dict:
            m = member.model_copy(
                update={"precision": precision, "steps_per_epoch": options.steps, "epochs": 2}
            )
            return TrainPayload(
                member=m.model_dump(mode="json"),
                organs=list(get_task(config.task).organs_for(m.modalities or [])),
                preprocess=config.preprocess.model_dump(mode="json"),
                augment=config.augment.model_dump(mode="json"),
                cache_dir=str(data.cache.root),
                train_ids=data.ids_for(m, "train"),
                val_ids=data.ids_for(m, "val"),
            ).model_dump(mode="json")

        def run(groups: list[list[dict]]) -> tuple[list[dict], float]:
            """One process per group, all at once (timed windows aligned); figures and wall time."""
            queue = ctx.Queue()
            barrier = ctx.Barrier(len(groups)) if len(groups) > 1 else None
            procs = [
                ctx.Process(target=core_member, args=(g, options.steps, queue, barrier))
                for g in groups
            ]
            started = time.perf_counter()
            for p in procs:
                p.start()
            try:
                out = [
                    r for _ in procs for r in queue.get(timeout=options.timeout * len(groups[0]))
                ]
            finally:  # a timeout or a SIGTERM must not leave trainers holding the device
                for p in procs:
                    p.join(timeout=10)
                    if p.is_alive():
                        p.terminate()
            return out, time.perf_counter() - started

        precisions = options.precisions.split(",")
        for member in config.members:
            entry: dict[str, Any] = {}
            results, _ = run([[payload(member, p) for p in precisions]])
            for precision, result in zip(precisions, results, strict=True):
                entry[precision] = result
                print(
                    f"  {member.name:18s} {precision}: {result['train_slices_per_s']:7.1f} slices/s "
                    f"training, loader alone {result['loader_slices_per_s']:7.1f} slices/s, "
                    f"waiting for data {100 * result['data_wait_fraction']:.1f} % of the time",
                    flush=True,
                )
            figures["members"][member.name] = entry
            line: dict[str, Any] = {"member": member.name, **entry}
            if {"bf16", "fp32"} <= set(entry):
                line["bf16_over_fp32_x"] = (
                    entry["bf16"]["train_slices_per_s"] / entry["fp32"]["train_slices_per_s"]
                )
            emit("member", line)
        pair = [config.members[0], config.members[1]]
        first = precisions[0]
        both, wall = run([[payload(m, first)] for m in pair])
        side = {r["member"]: r["train_slices_per_s"] for r in both}
        alone = {m.name: figures["members"][m.name][first]["train_slices_per_s"] for m in pair}
        # the same number of slices per member: one after another takes Σ S/alone, side by side the
        # slower of S/side (training time only; process start and data loading excluded)
        sequential = sum(1.0 / alone[n] for n in alone)
        parallel = max(1.0 / side[n] for n in side)
        ratio = sequential / parallel
        print(
            f"  {pair[0].name} + {pair[1].name} ({first}) side by side: "
            + ", ".join(f"{n} {side[n]:.1f} slices/s (alone {alone[n]:.1f})" for n in side)
            + f"; parallel speed-up over one after another {ratio:.2f}x"
        )
        figures.update(
            pair=[m.name for m in pair],
            parallel_slices_per_s={n: round(v, 1) for n, v in side.items()},
            parallel_over_sequential_x=round(ratio, 3),
            pair_wall_s=round(wall, 1),
        )
        emit("pair", {k: figures[k] for k in ("pair", "parallel_slices_per_s",
                                               "parallel_over_sequential_x", "pair_wall_s")})  # fmt: skip
    print(json.dumps(figures))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--engine", choices=("ray", "core"), default="ray")
    parser.add_argument(
        "--gpu", action="store_true", help="core engine: the four CT members on CUDA"
    )
    parser.add_argument("--precisions", default="fp32", help="core engine: e.g. bf16,fp32")
    parser.add_argument("--steps", type=int, default=10, help="core engine: steps per epoch")
    parser.add_argument("--batch", type=int, default=8, help="core engine: slices per step")
    parser.add_argument("--timeout", type=float, default=300, help="core engine: seconds per run")
    parser.add_argument("--members", help="core engine: comma-separated member names (default all)")
    parser.add_argument("--jsonl", type=Path, help="core engine: append each figure line here")
    options = parser.parse_args()
    if options.engine == "core":
        return core_main(options)

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
