"""Make Ray Serve's gRPC proxy listen on the HTTP host instead of every interface.

Ray 2.60's proxy binds gRPC to ``[::]:<port>`` unconditionally (``HTTPOptions.host`` covers HTTP only).
``organseg serve`` installs :func:`grpc_on_http_host` as the local cluster's ``worker_process_setup_hook``
with ``ORGANSEG_GRPC_HOST`` set to the HTTP host; in the proxy process it rewrites that bind address.
On Kubernetes the pod network decides exposure and this hook is not needed.
"""

from __future__ import annotations

import os

GRPC_HOST_ENV = "ORGANSEG_GRPC_HOST"


def bind_address(address: str, host: str | None) -> str:
    """``[::]:9000`` → ``127.0.0.1:9000`` for host 127.0.0.1 (IPv6 hosts get brackets)."""
    if not host or host in ("0.0.0.0", "::") or not address.startswith("[::]:"):
        return address
    port = address.rsplit(":", 1)[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def grpc_on_http_host() -> None:
    host = os.environ.get(GRPC_HOST_ENV)
    if not host:
        return
    try:
        from ray.serve._private import default_impl  # the hook Serve's gRPC server binds through
    except ImportError:
        return
    original = default_impl.add_grpc_address
    if getattr(original, "_organseg", False):
        return

    def add_grpc_address(server, address: str):  # type: ignore[no-untyped-def]
        return original(server, bind_address(address, host))

    add_grpc_address._organseg = True  # type: ignore[attr-defined]
    default_impl.add_grpc_address = add_grpc_address
