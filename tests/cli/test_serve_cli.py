"""`organseg serve` on its own local Ray: starts, answers, and SIGTERM shuts everything down cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from organseg.config import parse_config
from organseg.ensemble.spec import write_untrained_model_dir

pytestmark = [pytest.mark.slow]


def _ray_processes() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\x00", b" ")
        except OSError:
            continue
        if b"raylet" in cmdline or b"gcs_server" in cmdline or b"ray::" in cmdline:
            found.add(int(proc.name))
    return found


def test_serve_command_runs_until_sigterm_and_leaves_nothing_behind(tmp_path: Path) -> None:
    import ray

    if ray.is_initialized() or _ray_processes():
        pytest.skip(
            "another local Ray cluster is running; this test starts its own (run it first or alone)"
        )
    config = parse_config(
        {
            "name": "cli-serve",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 64},
            "members": [
                {
                    "name": "attn",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 8, "depth": 4},
                }
            ],
        }
    )
    model_dir = write_untrained_model_dir(config, tmp_path / "model")
    serve_config = tmp_path / "serve.yaml"
    serve_config.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {
                        "name": "organseg",
                        "route_prefix": "/",
                        "import_path": "organseg.serve.app:build_app",
                        "args": {},
                    }
                ]
            }
        )
    )
    env = {**os.environ, "RAY_ADDRESS": ""}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "organseg.cli",
            "serve",
            str(serve_config),
            "--model-dir",
            str(model_dir),
            "--http-port",
            "18811",
            "--grpc-port",
            "19811",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get("http://127.0.0.1:18811/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        models = httpx.get("http://127.0.0.1:18811/v1/models", timeout=10).json()
        assert models["name"] == "cli-serve"
        assert _ray_processes()
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output
    assert "shutting down" in output
    deadline = time.monotonic() + 30
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(1)
    assert not _ray_processes(), "Ray processes outlived `organseg serve`"
    with pytest.raises(httpx.HTTPError):
        httpx.get("http://127.0.0.1:18811/healthz", timeout=2)
