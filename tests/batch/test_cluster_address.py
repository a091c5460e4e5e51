"""A cluster address that cannot be joined is one clear error naming it, never Ray's traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.batch.conftest import Archive


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_ray_client_address_is_named(
    archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    address = f"ray://127.0.0.1:{_closed_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        # Ray Client waits 30 s for an unreachable server by default; one second each says the same.
        "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",
        "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "1",
    }
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [sys.executable, "-m", "organseg.cli", "batch", str(archive.root), "-o", str(tmp_path / "out"),
         "--model", str(batch_model), "--address", address],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    folded = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"cannot join the Ray cluster at {address}" in folded
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "results.parquet").exists()
