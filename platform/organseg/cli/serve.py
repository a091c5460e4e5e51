"""`organseg serve`: the ensemble graph over HTTP and gRPC until interrupted."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

#: Signals that stop the server (SIGHUP: the terminal or parent session went away).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def serve_command(
    config: Path | None = typer.Argument(
        None, help="Serve config YAML (default: the shipped CPU profile, deploy/serve/local.yaml)."
    ),
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="Model directory (overrides the config's args)."
    ),
    http_port: int | None = typer.Option(
        None, "--http-port", help="HTTP port (default from the config, 8000)."
    ),
    grpc_port: int | None = typer.Option(
        None, "--grpc-port", help="gRPC port (default from the config, 9000)."
    ),
    host: str | None = typer.Option(
        None, "--host", help="HTTP and gRPC bind address (default from the config)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS or local)."
    ),
    autoscaling: bool | None = typer.Option(
        None,
        "--autoscaling/--no-autoscaling",
        help="Whether the cluster can add nodes (default: detected). Without, deployments that can "
        "never be placed fail at once; with, the command waits for them up to --resource-wait.",
    ),
    resource_wait: float = typer.Option(
        600.0,
        "--resource-wait",
        help="Seconds to wait for an autoscaler to add what replicas need.",
    ),
    update: bool = typer.Option(
        False,
        "--update",
        help="Apply the config to the application already running on the cluster (--address, "
        "default auto) and exit: with a new --model-dir of the same members this is a live switch.",
    ),
) -> None:
    """Deploy router → per-modality ensembles → members and serve until Ctrl-C or SIGTERM."""
    from organseg.cli._console import err_console
    from organseg.runtime import ray_session
    from organseg.serve.runner import DeployInterrupted, deploy, load_serve_config, shutdown

    schema = load_serve_config(config, model_dir, http_port, grpc_port, host)
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        err_console.print(f"received {signal.Signals(signum).name}; shutting down")
        stop.set()

    if update:
        with ray_session(address or os.environ.get("RAY_ADDRESS") or "auto"):
            switched = deploy(schema, autoscaling=autoscaling, resource_wait_s=resource_wait)
        what = f"switched {', '.join(switched)} in place" if switched else "redeployed"
        err_console.print(f"[green]updated[/]: {what}", highlight=False)
        return

    bind_host = schema.http_options.host
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        from organseg.serve.ops import reaper

        reaper.start()  # removes the local cluster should this process be killed outright
    with ray_session(address, **(_local_cluster_options(bind_host) if local else {})):
        if local:
            _note_exposed_ray_ports(err_console)
        # After ray.init, which installs its own fatal-signal handlers: SIGTERM must mean "shut down cleanly".
        previous = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
        try:
            err_console.print("deploying (first start loads every member; this can take a minute)")
            try:
                deploy(
                    schema,
                    autoscaling=autoscaling,
                    resource_wait_s=resource_wait,
                    stop=stop,
                )
            except DeployInterrupted:
                pass
            else:
                http = schema.http_options
                err_console.print(
                    f"[green]serving[/] {', '.join(a.name for a in schema.applications)}: "
                    f"HTTP http://{http.host}:{http.port}  (docs at /docs)  gRPC "
                    f"{bind_host}:{schema.grpc_options.port}; Ctrl-C to stop",
                    highlight=False,
                    soft_wrap=True,
                )
                while not stop.wait(1.0):
                    pass
        finally:
            shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    err_console.print("stopped")


def _local_cluster_options(bind_host: str) -> dict:
    """A local cluster on loopback (unless the config serves on another address), whose gRPC proxy
    binds where HTTP does (Ray's proxy would listen on every interface)."""
    loopback = bind_host in ("127.0.0.1", "localhost", "::1")
    options: dict = {
        "runtime_env": {
            "worker_process_setup_hook": "organseg.serve.ops.bind.grpc_on_http_host",
            "env_vars": {"ORGANSEG_GRPC_HOST": bind_host},
        }
    }
    if loopback:
        options.update(node_ip_address="127.0.0.1", dashboard_host="127.0.0.1")
    return options


def _note_exposed_ray_ports(console: Console) -> None:
    """Say once which of the local cluster's own ports other hosts can reach (Ray cannot bind them to
    loopback); serving itself listens where the config says."""
    from organseg.serve.ops.bind import ray_ports_beyond_loopback

    exposed = ray_ports_beyond_loopback()
    if exposed:
        ports = ", ".join(f"{name} {port}" for name, port in exposed.items())
        console.print(
            f"[yellow]note[/]: Ray's own ports listen on every interface, not only loopback ({ports}, "
            "and one per worker process); Ray 2.60 cannot bind them to one address. Keep other hosts "
            "away from them with a firewall or by running inside a container or pod network: "
            "docs/network.md",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
