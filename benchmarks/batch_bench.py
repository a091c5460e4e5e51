"""Batch segmentation throughput: a sequential `predict --local` loop against `organseg batch`.

On the same studies, one run measures studies per hour for
  1. a shell loop of `organseg predict STUDY --local MODEL` (one process per study, what users script);
  2. one process that loads the model once and segments study after study (the best sequential loop:
     the batch core's read → predict → write stages without Ray);
  3. `organseg batch` on this machine's local Ray (the Ray Data pipeline: CPU read tasks, a predicting
     actor pool, CPU write tasks);
  4. `organseg batch` on a 2-raylet local cluster (two raylets on this machine, ``ray.cluster_utils``);
and how each batch run's time splits into read / predict / write (summed over series, from the results
table). The CPU default uses small DICOM CT studies (a PACS-export-like tree); ``--gpu`` uses 512² CT
volumes with the four CT members and one or two predicting actors per GPU, and reports studies per hour
per GPU beside TotalSegmentator's published 1 min 17 s – 3 min 32 s per CT on an RTX 3090 (≈ 17–47 CT
per hour per GPU). Members carry freshly initialised weights: architectures and pixels are real, masks
are not. The last line printed is one JSON object with every figure.

    python benchmarks/batch_bench.py                   # CPU, 8 studies of 64² x 24
    python benchmarks/batch_bench.py --gpu             # GPU, 16 studies of 512² x 96
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_bench import make_model_dir  # one untrained model directory for every benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))

GPU_MEMBERS = {
    "ternausnet": {"arch": "ternausnet", "in_channels": 3},
    "linknet34": {"arch": "linknet34", "in_channels": 3},
    "unet-resnet50": {"arch": "unet_resnet50", "in_channels": 3},
    "unet-se-resnet50": {"arch": "unet_se_resnet50", "in_channels": 3},
}
CPU_MEMBERS = {
    "attention-unet": {
        "arch": "attention_unet",
        "in_channels": 1,
        "kwargs": {"base_channels": 8, "depth": 4},
        "modalities": ["CT"],
    },
}
TOTALSEGMENTATOR_CT_PER_HOUR_GPU = (3600 / 212, 3600 / 77)  # 3 min 32 s and 1 min 17 s per CT


def dicom_studies(root: Path, count: int, size: int, slices: int) -> list[Path]:
    """``count`` synthetic CT series as DICOM, moved into a PACS-export-like tree; their folders."""
    from organseg.synth import write_dataset

    write_dataset(root / "synth", ct=count, mr=0, size=size, slices=slices, seed=5)
    folders = []
    for k in range(1, count + 1):
        target = root / "archive" / f"P{k:04d}" / "study" / "ct"
        target.parent.mkdir(parents=True)
        shutil.move(root / "synth" / "Train_Sets" / "CT" / str(k) / "DICOM_anon", target)
        folders.append(target)
    shutil.rmtree(root / "synth")
    return folders


def volume_studies(root: Path, count: int, size: int, slices: int) -> list[Path]:
    """``count`` CT volumes at ``size``² as NIfTI files (phantoms made at 128² and upsampled)."""
    from organseg.io.files import write_volume_file
    from organseg.io.volume import Geometry, Modality, Volume
    from organseg.synth import make_phantom

    paths = []
    for k in range(count):
        image, _, spacing = make_phantom("CT", size=128, slices=slices, seed=k + 1)
        factor = max(1, size // 128)
        array = np.repeat(np.repeat(image, factor, axis=1), factor, axis=2)
        geometry = Geometry(spacing=(spacing[0] / factor, spacing[1] / factor, spacing[2]))
        volume = Volume(array, geometry, Modality.CT, {"Modality": "CT"})
        paths.append(write_volume_file(volume, root / "archive" / f"ct{k:04d}.nii.gz"))
    return paths


def per_hour(studies: int, seconds: float) -> float:
    return round(3600.0 * studies / seconds, 1) if seconds > 0 else float("nan")


def cli_loop(studies: list[Path], model: Path, out: Path, device: str) -> float:
    """Seconds for `organseg predict --local` run once per study, one process each."""
    started = time.perf_counter()
    for k, study in enumerate(studies):
        subprocess.run(
            [sys.executable, "-m", "organseg.cli", "predict", str(study), "-o",
             str(out / f"{k}.nii.gz"), "--local", str(model), "--device", device],
            check=True, capture_output=True,
        )  # fmt: skip
    return time.perf_counter() - started


def in_process_loop(archive: Path, model: Path, out: Path, device: str) -> dict[str, Any]:
    """The batch core's stages one series after another in this process (model loaded once)."""
    from organseg.batch.run import plan_run
    from organseg.batch.work import make_predictor, predict_stage, read_stage, write_stage

    started = time.perf_counter()
    plan = plan_run(archive, out, model, device=device)
    backend = make_predictor(plan.settings)
    rows = []
    for carrier in plan.todo:
        carrier = predict_stage(read_stage(carrier, plan.settings), backend, plan.settings.out)
        rows.append(write_stage(carrier, plan.settings).row)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, **split(rows)}


def split(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summed stage seconds over series, and the share of each."""
    sums = {
        s: float(sum(r.get(f"{s}_s") or 0.0 for r in rows)) for s in ("read", "predict", "write")
    }
    total = sum(sums.values()) or 1.0
    statuses = sorted({r["status"] for r in rows})
    return {
        "stage_s": {k: round(v, 2) for k, v in sums.items()},
        "stage_share": {k: round(v / total, 3) for k, v in sums.items()},
        "statuses": statuses,
        "nodes": len({r.get("node_id") for r in rows if r.get("node_id")}),
    }


def batch_run(archive: Path, model: Path, out: Path, pool) -> dict[str, Any]:
    """`organseg batch`'s plan and pipeline on the connected cluster (fresh OUT: nothing resumed)."""
    from organseg.batch.run import execute, plan_run

    started = time.perf_counter()
    plan = plan_run(archive, out, model)
    outcome = execute(plan, pool)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "counts": outcome.counts, **split(outcome.rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="512² CT, the four CT members, on GPUs")
    parser.add_argument("--studies", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--slices", type=int, default=None)
    parser.add_argument(
        "--cpus", type=int, default=None, help="CPUs each raylet offers (default: 2; --gpu: all)"
    )
    parser.add_argument("--cli-studies", type=int, default=None, help="studies the CLI loop runs")
    parser.add_argument("--skip-two-raylets", action="store_true")
    parser.add_argument(
        "--jsonl",
        type=Path,
        help="also append the figures here as one line (benchmarks/gpu_suite.sh)",
    )
    args = parser.parse_args()
    import ray

    from organseg.batch.pipeline import PoolSize

    gpu = args.gpu
    studies_n = args.studies or (16 if gpu else 8)
    size = args.size or (512 if gpu else 64)
    slices = args.slices or (96 if gpu else 24)
    device = "cuda" if gpu else "cpu"
    cpus = args.cpus or ((os.cpu_count() or 2) if gpu else 2)
    if gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--gpu: torch sees no CUDA device")
    figures: dict[str, Any] = {"mode": "gpu" if gpu else "cpu", "studies": studies_n,
                               "size": size, "slices": slices}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        root = Path(tmp)
        model = make_model_dir(GPU_MEMBERS if gpu else CPU_MEMBERS, size, root)
        make = volume_studies if gpu else dicom_studies
        studies = make(root, studies_n, size, slices)
        archive = root / "archive"

        cli_n = min(studies_n, args.cli_studies or (4 if gpu else studies_n))
        seconds = cli_loop(studies[:cli_n], model, root / "cli", device)
        figures["predict_cli_loop"] = {"studies": cli_n, "seconds": round(seconds, 2),
                                       "studies_per_hour": per_hour(cli_n, seconds)}  # fmt: skip
        loop = in_process_loop(archive, model, root / "loop", device)
        loop["studies_per_hour"] = per_hour(studies_n, loop["seconds"])
        figures["in_process_loop"] = loop
        print(f"sequential: CLI loop {figures['predict_cli_loop']['studies_per_hour']}/h, "
              f"in-process loop {loop['studies_per_hour']}/h", flush=True)  # fmt: skip

        gpus_total = 0.0
        runs: dict[str, dict[str, Any]] = {}
        ray.init(num_cpus=cpus, logging_level=logging.WARNING, log_to_driver=False)
        try:
            gpus_total = float(ray.cluster_resources().get("GPU", 0))
            pools = {"local": PoolSize(1, 1, 1.0 if gpu else 0.0)}
            if gpu and gpus_total:
                pools["local_2_per_gpu"] = PoolSize(2, 2, 0.5)
            for name, pool in pools.items():
                runs[name] = batch_run(archive, model, root / f"batch-{name}", pool)
        finally:
            ray.shutdown()
        if not args.skip_two_raylets:
            from ray.cluster_utils import Cluster

            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
            try:
                # the GPU (if any) belongs to the head raylet only: one card is never counted twice
                cluster.add_node(num_cpus=cpus, num_gpus=0)
                cluster.wait_for_nodes()
                ray.init(
                    address=cluster.address, logging_level=logging.WARNING, log_to_driver=False
                )
                pool = PoolSize(2, 2, 0.5 if gpu and gpus_total else 0.0)
                runs["two_raylets"] = batch_run(archive, model, root / "batch-2", pool)
            finally:
                ray.shutdown()
                cluster.shutdown()
        for name, run in runs.items():
            run["studies_per_hour"] = per_hour(studies_n, run["seconds"])
            run["seconds"] = round(run["seconds"], 2)
            figures[f"batch_{name}"] = run
            print(f"batch {name}: {run['studies_per_hour']}/h, split {run['stage_share']}, "
                  f"nodes {run['nodes']}", flush=True)  # fmt: skip
        loop["seconds"] = round(loop["seconds"], 2)
        base = figures["predict_cli_loop"]["studies_per_hour"]
        figures["ratio_batch_local_vs_cli_loop"] = round(
            runs["local"]["studies_per_hour"] / base, 2
        )
        figures["ratio_batch_local_vs_in_process_loop"] = round(
            runs["local"]["studies_per_hour"] / loop["studies_per_hour"], 2
        )
        if "two_raylets" in runs:
            figures["ratio_two_raylets_vs_cli_loop"] = round(
                runs["two_raylets"]["studies_per_hour"] / base, 2
            )
        if gpu:
            best = max(r["studies_per_hour"] for r in runs.values())
            figures["gpus"] = gpus_total
            figures["studies_per_hour_per_gpu"] = round(best / max(gpus_total, 1.0), 1)
            figures["totalsegmentator_ct_per_hour_per_gpu"] = [
                round(x, 1) for x in TOTALSEGMENTATOR_CT_PER_HOUR_GPU
            ]
        figures["cpu_count"] = os.cpu_count()
    if args.jsonl is not None:
        with args.jsonl.open("a") as sink:
            sink.write(json.dumps({"bench": "batch", "phase": "batch", **figures}) + "\n")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
