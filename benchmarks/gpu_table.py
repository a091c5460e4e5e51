"""One table (and one JSON line) from the GPU suite's parts: serving and training figures against the goals.

    python benchmarks/gpu_table.py SERVE_JSON TRAIN_JSON [--notes NOTES]

Each input is the last line a benchmark printed (its JSON figures); a part that failed or was skipped is
an empty or missing file, shown as "not measured" with the reason from ``--notes``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GOAL_SLICES_PER_S = 600.0  # through Serve (gRPC), 16 clients
GOAL_VOLUME_S = 0.5  # one 96-slice volume


def _load(path: Path) -> dict[str, Any]:
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def rows(serve: dict[str, Any], train: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []

    def fmt(value: Any, unit: str) -> str:
        return (
            "not measured"
            if value is None
            else f"{value:.3f} {unit}"
            if unit == "s"
            else f"{value:.0f} {unit}"
        )

    local = serve.get("in_process", {})
    served = serve.get("separate, max_batch_size 4") or serve.get("separate") or {}
    out.append(
        ("in-process, 1 client: one volume", fmt(local.get("seconds"), "s"), f"≤ {GOAL_VOLUME_S} s")
    )
    out.append(("in-process, 1 client", fmt(local.get("throughput_1_clients"), "slices/s"), ""))
    out.append(("in-process, 16 clients", fmt(local.get("throughput_16_clients"), "slices/s"), ""))
    out.append(
        (
            "Serve gRPC, 1 client: one volume",
            fmt(served.get("grpc_latency_s"), "s"),
            f"≤ {GOAL_VOLUME_S} s",
        )
    )
    out.append(("Serve gRPC, 1 client", fmt(served.get("throughput_1_clients"), "slices/s"), ""))
    out.append(
        (
            "Serve gRPC, 16 clients",
            fmt(served.get("throughput_16_clients"), "slices/s"),
            f"≥ {GOAL_SLICES_PER_S:.0f} slices/s",
        )
    )
    out.append(
        (
            "Serve voxels equal to in-process",
            f"{100 * served['voxel_agreement']:.3f} %"
            if "voxel_agreement" in served
            else "not measured",
            "",
        )
    )
    for name, entry in (train.get("members") or {}).items():
        for precision, figures in entry.items():
            out.append(
                (
                    f"training {name} {precision}",
                    f"{figures['train_slices_per_s']:.0f} slices/s",
                    f"loader alone {figures['loader_slices_per_s']:.0f} slices/s, "
                    f"waits {100 * figures['data_wait_fraction']:.0f} %",
                )
            )
        if {"bf16", "fp32"} <= set(entry):
            gain = entry["bf16"]["train_slices_per_s"] / entry["fp32"]["train_slices_per_s"]
            out.append((f"training {name} bf16 / fp32", f"{gain:.2f}x", ""))
    if "parallel_over_sequential_x" in train:
        out.append(
            (
                f"training {' + '.join(train.get('pair', []))} side by side vs one after another",
                f"{train['parallel_over_sequential_x']:.2f}x",
                ", ".join(
                    f"{k} {v:.0f} slices/s"
                    for k, v in train.get("parallel_slices_per_s", {}).items()
                ),
            )
        )
    return out  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("serve", type=Path)
    parser.add_argument("train", type=Path)
    parser.add_argument("--notes", type=Path, help="one line per skipped or failed part")
    parser.add_argument("--device", default="", help="the GPU, as nvidia-smi names it")
    options = parser.parse_args()
    serve, train = _load(options.serve), _load(options.train)
    table = rows(serve, train)
    width = max(len(r[0]) for r in table)
    print(f"organseg GPU suite {options.device}".rstrip())
    print(f"{'figure':<{width}}  {'measured':>16}  goal / note")
    for name, value, goal in table:
        print(f"{name:<{width}}  {value:>16}  {goal}")
    notes = options.notes.read_text().strip() if options.notes and options.notes.exists() else ""
    if notes:
        print("notes:", notes.replace("\n", "; "))
    served = serve.get("separate, max_batch_size 4") or {}
    summary = {
        "device": options.device,
        "serve_16_clients_slices_per_s": served.get("throughput_16_clients"),
        "serve_one_volume_s": served.get("grpc_latency_s"),
        "in_process_one_volume_s": serve.get("in_process", {}).get("seconds"),
        "goal_600_slices_per_s_met": (served.get("throughput_16_clients") or 0)
        >= GOAL_SLICES_PER_S,
        "goal_volume_0_5_s_met": (served.get("grpc_latency_s") or 1e9) <= GOAL_VOLUME_S,
        "serve": serve,
        "train": train,
        "notes": notes,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
