"""The soak benchmark's short version: every kind of traffic and fault at once, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak_bench.py"

pytestmark = [pytest.mark.own_ray_cluster, pytest.mark.slow]


def test_a_short_soak_loses_nothing(tmp_path: Path) -> None:
    """A minute of mixed traffic with a member, an ensemble and the router killed and a live switch (its
    own local Ray cluster, loopback ports of its own): the figures the docs promise for the hour."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--minutes", "1", "--event-every-s", "10",
         "--sample-every-s", "2", "--http-port", "18821", "--grpc-port", "19821"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    good, bad = figures["good"], figures["bad"]
    assert good["sent"] >= 20, figures
    assert good["failed"] == 0, good["errors"]
    assert good["differing"] == 0
    assert good["model_versions"] == 2  # the live switch was followed
    assert bad["sent"] >= 5
    assert bad["five_xx_ours"] == 0, bad
    assert [e["event"] for e in figures["events"]] == [
        "member-dualtail", "ensemble-CT", "router", "switch"
    ]  # fmt: skip
    assert all("error" not in e for e in figures["events"]), figures["events"]
    assert figures["orphaned_upload_folders"] == 0
    slow = figures["slow_senders"]
    assert set(slow) == {"408"}, slow  # answered by the router, not hung
    assert slow["408"] >= 3
