"""Where the service listens: Serve's gRPC proxy on the HTTP host, and which of Ray's own ports cannot.

Ray 2.60's proxy binds gRPC to ``[::]:<port>`` unconditionally (``HTTPOptions.host`` covers HTTP only).
``organseg serve`` installs :func:`grpc_on_http_host` as the local cluster's ``worker_process_setup_hook``
with ``ORGANSEG_GRPC_HOST`` set to the HTTP host; in the proxy process it rewrites that bind address.
On Kubernetes the pod network decides exposure and this hook is not needed.

Ray's own servers (GCS, raylet and object manager, every worker's gRPC server, the dashboard agent,
the metrics exporter) listen on every interface even when the node's IP is 127.0.0.1, and Ray 2.60 has
no option to bind them elsewhere; :func:`ray_ports_beyond_loopback` finds them so that ``organseg
serve`` can say so (docs/network.md says what to do about it).
"""

from __future__ import annotations

import ipaddress
import os

GRPC_HOST_ENV = "ORGANSEG_GRPC_HOST"


def bind_address(address: str, host: str | None) -> str:
    """``[::]:9000`` → ``127.0.0.1:9000`` for host 127.0.0.1 (IPv6 hosts get brackets)."""
    if not host or host in ("0.0.0.0", "::") or not address.startswith("[::]:"):
        return address
    port = address.rsplit(":", 1)[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcBindUnavailable(RuntimeError):
    """Ray no longer binds Serve's gRPC server where this hook can redirect it."""


def grpc_on_http_host() -> None:
    """In every process of the local cluster: bind Serve's gRPC server to ``$ORGANSEG_GRPC_HOST``.

    Raises :class:`GrpcBindUnavailable` when Ray moved or renamed the private entry it goes through
    (``ray.serve._private.default_impl.add_grpc_address``, pinned by tests/serve/test_ray_serve_pins.py):
    carrying on would bind gRPC to every interface while the user asked for one host.
    """
    host = os.environ.get(GRPC_HOST_ENV)
    if not host:
        return
    try:
        from ray.serve._private import default_impl  # the hook Serve's gRPC server binds through

        original = default_impl.add_grpc_address
    except (ImportError, AttributeError) as exc:
        raise GrpcBindUnavailable(
            f"cannot bind Serve's gRPC proxy to {host}: this Ray ({_ray_version()}) has no "
            f"ray.serve._private.default_impl.add_grpc_address ({exc}); gRPC would listen on every "
            "interface. Use the Ray version organseg pins, or unset ORGANSEG_GRPC_HOST to accept that."
        ) from None
    if getattr(original, "_organseg", False):
        return

    def add_grpc_address(server, address: str):  # type: ignore[no-untyped-def]
        return original(server, bind_address(address, host))

    add_grpc_address._organseg = True  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address


def _ray_version() -> str:
    try:
        import ray

        return f"ray {ray.__version__}"
    except ImportError:
        return "no ray"


def _loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or address).is_loopback


def ray_ports_beyond_loopback() -> dict[str, int]:
    """This node's fixed Ray ports (by name) that listen on an address other than loopback.

    Worker processes add one such port each (their gRPC servers), not listed here. Empty when nothing
    can be checked (no Ray, or the platform hides other processes' sockets).
    """
    import psutil
    import ray

    context = ray.get_runtime_context()
    node = next(n for n in ray.nodes() if n["NodeID"] == context.get_node_id())
    ports = {
        "GCS": int(context.gcs_address.rsplit(":", 1)[1]),
        "raylet": node.get("NodeManagerPort"),
        "object manager": node.get("ObjectManagerPort"),
        "metrics export": node.get("MetricsExportPort"),
        "dashboard agent": node.get("DashboardAgentListenPort"),
        "runtime env agent": node.get("RuntimeEnvAgentPort"),
    }
    try:
        sockets = psutil.net_connections("inet")
    except (psutil.AccessDenied, OSError):
        return {}
    exposed = {
        s.laddr.port
        for s in sockets
        if s.status == psutil.CONN_LISTEN and not _loopback(s.laddr.ip)
    }
    return {name: int(port) for name, port in ports.items() if port and int(port) in exposed}
