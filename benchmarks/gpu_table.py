"""One markdown table (and one JSON line) from the GPU suite's sections, against the goals.

    python benchmarks/gpu_table.py OUT_DIR [--notes NOTES] [--device NAME]

``OUT_DIR`` holds one ``<section>.jsonl`` per section (``serve``: compiled members, ``serve-eager``,
``train``): one JSON line per finished benchmark phase. A section that failed or ran out of time has
fewer lines or none; what it did not write shows as "not measured", with the reason from ``--notes``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

GOAL_SLICES_PER_S = 600.0  # through Serve (gRPC), 16 clients
GOAL_VOLUME_S = 0.5  # one 96-slice volume
GOAL_BF16_X = 1.5  # bf16 over fp32 training, per member
GOAL_PAIR_X = 1.6  # two members sharing a GPU over one after the other
SERVED = "separate, max_batch_size 4"


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """``{section: {phase or member: figures}}`` from every ``*.jsonl`` in ``folder``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        phases: dict[str, Any] = {}
        for line in path.read_text().splitlines():
            try:
                figures = json.loads(line)
            except ValueError:
                continue  # a line cut by a time limit
            key = (
                figures.get("member") if figures.get("phase") == "member" else figures.get("phase")
            )
            phases[str(key)] = figures
        out[path.stem] = phases
    return out


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "%":
        return f"{100 * value:.1f} %"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.0f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def rows(sections: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for section, label in (("serve", "compiled"), ("serve-eager", "eager")):
        phases = sections.get(section, {})
        local, served = phases.get("in_process", {}), phases.get(SERVED, {})
        volume = f"≤ {GOAL_VOLUME_S} s"
        out += [
            (f"in-process ({label}): one volume", _fmt(local.get("seconds"), "s"), volume),
            (f"in-process ({label}), 1 client", _fmt(local.get("throughput_1_clients"), "slices/s"), ""),
            (f"in-process ({label}), 16 clients", _fmt(local.get("throughput_16_clients"), "slices/s"), ""),
            (f"in-process ({label}): share in post-processing", _fmt(local.get("postprocess_share"), "%"), ""),
            (f"Serve HTTP ({label}): one volume", _fmt(served.get("http_latency_s"), "s"), volume),
            (f"Serve gRPC ({label}): one volume", _fmt(served.get("grpc_latency_s"), "s"), volume),
            (f"Serve gRPC ({label}), 1 client", _fmt(served.get("throughput_1_clients"), "slices/s"), ""),
            (f"Serve gRPC ({label}), 16 clients", _fmt(served.get("throughput_16_clients"), "slices/s"),
             f"≥ {GOAL_SLICES_PER_S:.0f} slices/s"),
            (f"Serve gRPC ({label}): share in post-processing",
             _fmt(served.get("grpc_postprocess_share"), "%"), "server stages"),
            (f"Serve voxels equal to in-process ({label})", _fmt(served.get("voxel_agreement"), "%"), ""),
        ]  # fmt: skip
    compiled = sections.get("serve", {}).get("in_process", {}).get("seconds")
    eager = sections.get("serve-eager", {}).get("in_process", {}).get("seconds")
    gain = eager / compiled if compiled and eager else None
    out.append(("torch.compile: in-process volume, eager / compiled", _fmt(gain, "x"), ""))
    train = sections.get("train", {})
    for name, entry in train.items():
        if name == "pair" or not isinstance(entry, dict):
            continue
        for precision in ("bf16", "fp32"):
            figures = entry.get(precision)
            if figures:
                out.append(
                    (
                        f"training {name} {precision}",
                        _fmt(figures["train_slices_per_s"], "slices/s"),
                        f"{figures.get('steps', '?')} timed steps; loader alone "
                        f"{figures['loader_slices_per_s']:.0f} slices/s, waits "
                        f"{100 * figures['data_wait_fraction']:.0f} %",
                    )
                )
        out.append(
            (
                f"training {name} bf16 / fp32",
                _fmt(entry.get("bf16_over_fp32_x"), "x"),
                f"≥ {GOAL_BF16_X}x",
            )
        )
    batch = sections.get("batch", {}).get("batch", {})
    if batch:  # an opt-in section (SUITE_SECTIONS=batch)
        out.append(
            (
                "organseg batch: studies/hour/GPU",
                _fmt(batch.get("studies_per_hour_per_gpu"), "studies/h"),
                "TotalSegmentator: "
                + "–".join(
                    f"{x:.0f}" for x in batch.get("totalsegmentator_ct_per_hour_per_gpu", [])
                )
                + " CT/h/GPU",
            )
        )
    pair = train.get("pair", {})
    out.append(
        (
            f"training {' + '.join(pair.get('pair', ['two members']))} side by side vs one after another",
            _fmt(pair.get("parallel_over_sequential_x"), "x"),
            f"≥ {GOAL_PAIR_X}x",
        )
    )
    return out


def markdown(table: list[tuple[str, str, str]], title: str) -> str:
    lines = [f"**{title}**", "", "| figure | measured | goal / note |", "|---|---:|---|"]
    lines += [f"| {name} | {value} | {goal} |" for name, value, goal in table]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the suite's output folder (*.jsonl)")
    parser.add_argument("--notes", type=Path, help="one line per failed or stopped section")
    parser.add_argument("--device", default="", help="the GPU, as nvidia-smi names it")
    options = parser.parse_args()
    sections = load(options.folder)
    table = rows(sections)
    print(markdown(table, f"organseg GPU suite {options.device}".rstrip()))
    notes = options.notes.read_text().strip() if options.notes and options.notes.exists() else ""
    if notes:
        print("\nnotes: " + notes.replace("\n", "; "))
    served = sections.get("serve", {}).get(SERVED, {})
    summary = {
        "device": options.device,
        "serve_16_clients_slices_per_s": served.get("throughput_16_clients"),
        "serve_one_volume_s": served.get("grpc_latency_s"),
        "goal_600_slices_per_s_met": (served.get("throughput_16_clients") or 0)
        >= GOAL_SLICES_PER_S,
        "goal_volume_0_5_s_met": (served.get("grpc_latency_s") or 1e9) <= GOAL_VOLUME_S,
        "table": [list(row) for row in table],
        "notes": notes,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
