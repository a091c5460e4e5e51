"""`organseg batch --address` on a 2-raylet local cluster: the predicting actors use both raylets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import Archive

pytestmark = [pytest.mark.own_ray_cluster, pytest.mark.slow]


def test_two_raylets_both_predict(archive: Archive, batch_model: Path, tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("the session's Ray cluster is already up; this test starts its own")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        result = subprocess.run(
            [sys.executable, "-m", "organseg.cli", "batch", str(archive.root), "-o", str(out),
             "--model", str(batch_model), "--address", cluster.address, "--workers", "2"],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr[-3000:]
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert len(rows) == archive.series_count
        nodes = {r["node_id"] for r in rows if r["status"] == "done"}
        assert len(nodes) == 2, [(r["status"], r["node_id"][:8]) for r in rows]
        assert "refused" in result.stdout
    finally:
        cluster.shutdown()
