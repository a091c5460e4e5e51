"""Connecting to Ray: reuse a running session, join a cluster, or start (and later stop) a local one."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray


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
    ray.init(address=address, **kwargs)
    try:
        yield
    finally:
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
