"""Connecting to Ray: reuse a running session, join a cluster, or start (and later stop) a local one."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray
import tenacity

from organseg.errors import ClusterError

#: Attempts to open a Ray Client (``ray://``) connection whose server side failed to start.
CLIENT_CONNECT_ATTEMPTS = 3


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    worker_logs: bool | None = None,
    node_ip_address: str | None = None,
    dashboard_host: str | None = None,
    runtime_env: dict | None = None,
) -> Iterator[None]:
    """Use Ray for the duration of a command.

    An already initialised Ray (tests, notebooks, Ray Jobs) is reused and left running. Otherwise Ray
    joins ``address`` (or ``$RAY_ADDRESS``) or starts a local cluster, which is shut down on exit. The
    dashboard stays on: Ray Train's placement-group cleaner needs it when trials are stopped early.
    Worker output (Ray Train's per-report chatter) reaches the console only with ``worker_logs`` or
    ``ORGANSEG_RAY_LOGS=1``; failures are reported either way.
    """
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if worker_logs is None:
        worker_logs = os.environ.get("ORGANSEG_RAY_LOGS") == "1"
    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": worker_logs}
    if address is None:
        kwargs.update(include_dashboard=True, num_cpus=num_cpus)
        if node_ip_address:  # e.g. 127.0.0.1: the local cluster is reachable from this host only
            kwargs["_node_ip_address"] = node_ip_address
        if dashboard_host:
            kwargs["dashboard_host"] = dashboard_host
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
    _join(address, kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _join(address: str | None, kwargs: dict) -> None:
    """``ray.init``; a Ray Client connection is retried when the cluster accepted it but failed to start
    its per-connection server (a transient failure of the head's client proxy), and a connection that
    cannot be made is one :class:`ClusterError` naming the address instead of Ray's traceback."""
    if not (address or "").startswith("ray://"):
        ray.init(address=address, **kwargs)
        return
    attempts = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(ConnectionAbortedError),
        stop=tenacity.stop_after_attempt(CLIENT_CONNECT_ATTEMPTS),
        wait=tenacity.wait_fixed(1.0),
        before_sleep=_before_retry,
        reraise=True,
    )
    try:
        attempts(ray.init, address=address, **kwargs)
    except ConnectionError as exc:
        _forget_client()
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise ClusterError(
            f"cannot join the Ray cluster at {address}: {reason} (is its Ray Client server "
            "running on that port, and reachable from here?)"
        ) from None


def _before_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logging.getLogger(__name__).warning("Ray Client connection failed (%s); retrying", exc)
    _forget_client()


def _forget_client() -> None:
    """Drop what a failed Ray Client connection left behind, so the next attempt starts clean."""
    with contextlib.suppress(Exception):
        ray.shutdown()


def starts_local_cluster(address: str | None) -> bool:
    """True when :func:`ray_session` will start (and stop) a local Ray cluster."""
    return not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS"))


# -- reading the cluster for organseg.resources (which stays Ray-free) ----------------------------------


def cluster_resources() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Every live node's total resources, and what each has free right now (may be stale by the
    time it is used): what :func:`organseg.resources.settle` reads on each poll."""
    from ray._private import state  # DeveloperAPI: per-node availability has no public equivalent

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    return nodes, [dict(v) for v in state.available_resources_per_node().values()]


def autoscaler_present() -> bool:
    """True when an autoscaler published its node groups to the cluster (KubeRay, ``ray up``).

    A local ``ray.init()`` cluster has none; when unsure, callers take the explicit ``--autoscaling``.
    """
    try:
        from ray._private import state

        config = state.state.get_cluster_config()
    except Exception:  # an older GCS or no permission: no evidence of an autoscaler
        return False
    return config is not None and any(g.max_count != 0 for g in config.node_group_configs)
