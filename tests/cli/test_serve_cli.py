"""`organseg serve` on its own local Ray: starts, answers, and SIGTERM shuts everything down cleanly."""

from __future__ import annotations

import os
import re
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
from organseg.serve.runner import serve_schema

pytestmark = [pytest.mark.slow, pytest.mark.own_ray_cluster]


def _ray_processes() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue
        # the program (and a Python script of Ray's), not any argument: `grep raylet` is no Ray process
        program = argv[0]
        script = next((a for a in argv[1:3] if a.endswith(b".py")), b"")
        if (
            program.endswith((b"/raylet", b"/gcs_server"))
            or program.startswith(b"ray::")
            or b"/site-packages/ray/" in script
        ):
            found.add(int(proc.name))
    return found


def _skip_if_ray_runs() -> None:
    import ray

    if not ray.is_initialized():
        _wait_until_gone(15)  # a previous test's cluster may still be on its way out
    if ray.is_initialized() or _ray_processes():
        pytest.skip(
            "another local Ray cluster is running; this test starts its own (run it first or alone)"
        )


def _listeners() -> dict[int, set[str]]:
    """Listening TCP ports → the addresses they are bound to."""
    import psutil

    found: dict[int, set[str]] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN:
            found.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    return found


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or ip).is_loopback


def _start_server(tmp_path: Path, http_port: int, grpc_port: int) -> subprocess.Popen:
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
    serve_config.write_text(yaml.safe_dump(serve_schema(None)))  # model dir and ports: flags
    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "organseg.cli",
            "serve",
            str(serve_config),
            "--model-dir",
            str(model_dir),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_gone(timeout_s: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    return _ray_processes()


def test_serve_command_runs_until_sigterm_and_leaves_nothing_behind(tmp_path: Path) -> None:
    _skip_if_ray_runs()
    server = _start_server(tmp_path, 18811, 19811)
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
        bound = _listeners()
        # HTTP, gRPC and the dashboard listen where the config says (loopback), not on every interface
        for port in (18811, 19811, 8265):
            assert bound.get(port), port
            assert all(_is_loopback(a) for a in bound[port]), (port, bound[port])
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output
    assert "shutting down" in output
    # Ray's own ports cannot be bound to loopback: the command names the ones that are not, truly
    note = next(line for line in output.splitlines() if "Ray's own ports" in line)
    named = [int(p) for p in re.findall(r"(?:GCS|raylet|object manager) (\d+)", note)]
    assert len(named) == 3, note
    assert all(not all(_is_loopback(a) for a in bound[port]) for port in named), (note, bound)
    assert not _wait_until_gone(), "Ray processes outlived `organseg serve`"
    with pytest.raises(httpx.HTTPError):
        httpx.get("http://127.0.0.1:18811/healthz", timeout=2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_serve_command_stops_while_deploying_and_leaves_no_ray_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A signal during the (long) deployment stops it promptly; SIGKILL leaves the watchdog to clean up."""
    _skip_if_ray_runs()
    server = _start_server(tmp_path, 18812, 19812)
    try:
        deadline = time.monotonic() + 120
        while "deploying" not in (server.stdout.readline() or "") and time.monotonic() < deadline:
            assert server.poll() is None
        assert _ray_processes()  # Ray is up, the application is still deploying
        started = time.monotonic()
        server.send_signal(sig)
        server.communicate(timeout=60)
        stopped_s = time.monotonic() - started
    finally:
        if server.poll() is None:
            server.kill()
    left = _wait_until_gone()
    assert not left, f"Ray processes outlived `organseg serve` ({sig.name}): {sorted(left)}"
    assert stopped_s < 30, stopped_s
