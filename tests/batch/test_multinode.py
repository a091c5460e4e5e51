"""`organseg batch --address` on a 2-raylet local cluster: the predicting actors use both raylets,
and the same cluster is reached through Ray Client (``ray://``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from tests.batch.conftest import Archive
from tests.batch.test_work import predict_local

pytestmark = [pytest.mark.own_ray_cluster, pytest.mark.slow]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TwoRaylets:
    def __init__(self, address: str, client_port: int) -> None:
        self.address, self.client_port = address, client_port


@pytest.fixture(scope="module")
def two_raylets() -> Iterator[TwoRaylets]:
    """A head and a worker raylet of 3 CPUs each (one 2-CPU predicting actor fits a node, two do not,
    and a CPU is left for reading and writing); the head also runs the Ray Client server."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("the session's Ray cluster is already up; these tests start their own")
    port = _free_port()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 3, "ray_client_server_port": port}
    )
    try:
        cluster.add_node(num_cpus=3)
        cluster.wait_for_nodes()
        yield TwoRaylets(cluster.address, port)
    finally:
        cluster.shutdown()


def _batch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "organseg.cli", "batch", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def test_two_raylets_both_predict(
    two_raylets: TwoRaylets, archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _batch(str(archive.root), "-o", str(out), "--model", str(batch_model),
                    "--address", two_raylets.address, "--workers", "2",
                    "--cpus-per-worker", "2")  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == archive.series_count
    # every series that reached a predicting actor records its node (done, or refused there, e.g.
    # an MR series for this CT model): which actor gets which series is the pool's choice
    nodes = {r["node_id"] for r in rows if r["node_id"]}
    assert len(nodes) == 2, [(r["status"], r["node_id"][:8]) for r in rows]
    assert {r["node_id"] for r in rows if r["status"] == "done"} <= nodes
    assert "refused" in result.stdout


def test_ray_client_runs_the_pipeline_on_the_cluster(
    two_raylets: TwoRaylets, archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    """Through ``ray://`` this process has no core worker for Ray Data's executor: the pipeline runs
    in a task on the cluster and its rows come back one by one; the masks are the same."""
    manifest = tmp_path / "two.csv"
    manifest.write_text(f"path\n{archive.sources['ct1']}\n{archive.sources['ct2']}\n")
    out = tmp_path / "out"
    result = _batch(str(manifest), "-o", str(out), "--model", str(batch_model),
                    "--address", f"ray://127.0.0.1:{two_raylets.client_port}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2/2" in result.stderr, "progress reached the client"
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r["node_id"] for r in rows)
    theirs = predict_local(batch_model, archive.sources["ct2"], tmp_path / "ct2.nii.gz")
    (ours,) = [r["output"] for r in rows if r["source"] == str(archive.sources["ct2"].resolve())]
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(ours)),
        sitk.GetArrayFromImage(sitk.ReadImage(str(theirs))),
    )
