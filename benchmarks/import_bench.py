"""Import cost of the light entry points: ``organseg --help``, ``import organseg.config`` and the Serve router.

None of them loads torch (checked in each run). Each is timed in fresh interpreters (the minimum of
``--repeats`` runs, page cache warm) beside the same import with torch loaded first -- what the config
and the router cost when they imported torch (through ``AugmentConfig`` and the predictor) -- and the
ratio is printed (>1: faster now). ``organseg --help`` never loaded torch; its ratio shows the margin.

    python benchmarks/import_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

TARGETS = {
    "organseg --help": "from organseg.cli import main; main(['--help'])",
    "import organseg.config": "import organseg.config",
    "import organseg.serve.router": "import organseg.serve.router",
}
TORCH_CHECK = "; import sys; assert 'torch' not in sys.modules, 'torch was imported'"


def wall(code: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    # `main(['--help'])` exits; the torch check runs in a try/finally around it
    for name, code in TARGETS.items():
        check = f"try:\n    {code}\nfinally:\n    {TORCH_CHECK.removeprefix('; ')}"
        now = wall(check, args.repeats)
        with_torch = wall(
            f"import torch\n{check.replace(TORCH_CHECK.removeprefix('; '), 'pass')}", args.repeats
        )
        ratio = with_torch / now
        print(
            f"{name:32s} {now:6.2f} s   with torch {with_torch:6.2f} s   {ratio:4.1f}x", flush=True
        )
        key = name.replace("organseg --help", "cli_help").split()[-1].replace(".", "_")
        figures[f"{key}_s"] = round(now, 3)
        figures[f"{key}_with_torch_s"] = round(with_torch, 3)
        figures[f"{key}_ratio"] = round(ratio, 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
