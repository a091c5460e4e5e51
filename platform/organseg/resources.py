"""Do the resources that members or deployments ask for fit the cluster? Said before Ray starts waiting.

Ray queues a request that cannot be placed and waits for it without end (Ray Train retries the worker
start, Serve keeps a replica "pending"), which on a laptop without GPUs looks like a hang. This module is
the pure core: requests and node capacities in, what can never be placed (and why) or what is missing right
now out, and the wait for an autoscaler. No Ray here: the launcher and the Serve runner read the
cluster through :mod:`organseg.runtime` (the Ray glue) and hand the reading in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from organseg.errors import OrgansegError

# Ray's own bookkeeping resources (node:<ip>, accelerator_type:..., object store memory) are not asked for
# by members and deployments; comparing them would only add noise.
_IGNORED_PREFIXES = ("node:", "accelerator_type:", "object_store_memory")
_EPS = 1e-9


@dataclass(frozen=True)
class Request:
    """One member or deployment: ``bundles`` are the processes it starts, each placed on a single node."""

    name: str
    bundles: tuple[Mapping[str, float], ...]
    #: where the values come from, e.g. ``members.1`` or ``deployments[member-x]`` (used in the advice)
    source: str = ""

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for key, value in bundle.items():
                out[key] = out.get(key, 0.0) + float(value)
        return out


@dataclass
class Verdict:
    """The outcome of a check: requests that can never be placed, and what waits for freed resources."""

    never: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.never


def _relevant(resources: Mapping[str, float]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in resources.items()
        if v > 0 and not any(k.startswith(p) for p in _IGNORED_PREFIXES)
    }


def describe(resources: Mapping[str, float]) -> str:
    """``{"CPU": 4, "GPU": 0.5}`` → ``4 CPU + 0.5 GPU``."""
    parts = [f"{_num(v)} {k}" for k, v in sorted(_relevant(resources).items())]
    return " + ".join(parts) or "nothing"


def _num(value: float) -> str:
    return f"{value:g}"


def _fits(bundle: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + _EPS >= v for k, v in _relevant(bundle).items())


def _place(bundles: Iterable[Mapping[str, float]], nodes: list[dict[str, float]]) -> bool:
    """First-fit decreasing of ``bundles`` onto copies of ``nodes`` (consumed in place)."""
    ordered = sorted(
        bundles, key=lambda b: sorted(_relevant(b).items(), reverse=True), reverse=True
    )
    for bundle in ordered:
        for node in nodes:
            if _fits(bundle, node):
                for k, v in _relevant(bundle).items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return False
    return True


def never_fits(request: Request, nodes: list[Mapping[str, float]]) -> str | None:
    """Why ``request`` can never be placed on these nodes (even with the cluster idle), or None."""
    if not request.bundles:
        return None
    totals: dict[str, float] = {}
    for node in nodes:
        for k, v in _relevant(node).items():
            totals[k] = totals.get(k, 0.0) + v
    asked = request.total()
    short = {k: v for k, v in _relevant(asked).items() if totals.get(k, 0.0) + _EPS < v}
    bundle = request.bundles[0]
    per = f" ({len(request.bundles)} × {describe(bundle)})" if len(request.bundles) > 1 else ""
    if short:
        has = ", ".join(f"{_num(totals.get(k, 0.0))} {k}" for k in sorted(short))
        return f"asks {describe(asked)}{per}; the cluster has {has} in all"
    biggest = [b for b in request.bundles if not any(_fits(b, n) for n in nodes)]
    if biggest:
        return (
            f"asks {describe(biggest[0])} in one process; no node has that much "
            f"(largest: {', '.join(describe(n) for n in nodes[:3])})"
        )
    if not _place(request.bundles, [dict(_relevant(n)) for n in nodes]):
        return f"asks {describe(asked)}{per}; its processes cannot be packed onto the nodes"
    return None


def check(
    requests: list[Request],
    nodes: list[Mapping[str, float]],
    available: list[Mapping[str, float]] | None = None,
) -> Verdict:
    """Each request against the cluster's ``nodes`` (totals) and, if given, what is ``available`` now.

    ``waiting`` names requests that fit the cluster but not what is free at the moment (run in turn, or
    until the autoscaler adds nodes); the requests are placed in order, as the launcher submits them.
    """
    verdict = Verdict()
    for request in requests:
        reason = never_fits(request, nodes)
        if reason:
            verdict.never[request.name] = reason
    if available is not None:
        free = [dict(_relevant(n)) for n in available]
        for request in requests:
            if request.name in verdict.never:
                continue
            if not _place(request.bundles, free):
                totals: dict[str, float] = {}
                for node in free:
                    for k, v in node.items():
                        totals[k] = totals.get(k, 0.0) + max(v, 0.0)
                missing = {
                    k: v - totals.get(k, 0.0)
                    for k, v in _relevant(request.total()).items()
                    if totals.get(k, 0.0) + _EPS < v
                }
                verdict.waiting[request.name] = (
                    f"missing {describe(missing)}" if missing else "waiting for a node with room"
                )
    return verdict


def never_fit_together(requests: list[Request], nodes: list[Mapping[str, float]]) -> dict[str, str]:
    """Requests that must all run at once (Serve replicas) but do not fit beside the ones before them."""
    free = [dict(_relevant(n)) for n in nodes]
    asked: dict[str, float] = {}
    for request in requests:
        for k, v in _relevant(request.total()).items():
            asked[k] = asked.get(k, 0.0) + v
    out = {}
    for request in requests:
        if not _place(request.bundles, free):
            out[request.name] = (
                f"asks {describe(request.total())}, which does not fit beside the others "
                f"(together they ask {describe(asked)})"
            )
    return out


def largest_node(nodes: list[Mapping[str, float]]) -> dict[str, float]:
    """The per-resource maximum over nodes (what one process could get at most)."""
    out: dict[str, float] = {}
    for node in nodes:
        for k, v in _relevant(node).items():
            out[k] = max(out.get(k, 0.0), v)
    return out


class ResourceError(OrgansegError):
    """What was asked for can never be placed on this cluster (or did not become free in time)."""


#: ``() → (every live node's total resources, what each has free now)``: the cluster as Ray reports it
#: (:func:`organseg.runtime.cluster_resources`), read by the caller's Ray glue, not here.
ClusterReader = Callable[[], tuple[list[dict[str, float]], list[dict[str, float]]]]


def settle(
    requests: list[Request],
    *,
    what: str,
    advice: Callable[[Request, list[dict[str, float]]], str],
    read: ClusterReader,
    autoscaling: bool,
    timeout_s: float = 600.0,
    on_wait: Callable[[dict[str, str]], None] | None = None,
    poll_s: float = 2.0,
    together: bool = False,
) -> Verdict:
    """Fail at once when a request can never be placed and no autoscaler can add nodes; with one, wait
    (reporting what is missing through ``on_wait``) until it can or ``timeout_s`` passes. The cluster
    is read through ``read`` on every poll; ``autoscaling`` says whether one can add nodes
    (:func:`organseg.runtime.autoscaler_present` when the user did not say).

    Returns the verdict against what is free now (``waiting``: requests that start when others finish).
    ``together``: every request must be placed at the same time (Serve replicas), not in turn.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        nodes, available = read()
        verdict = check(requests, nodes, available)
        if together and verdict.ok:
            verdict.never.update(never_fit_together(requests, nodes))
        if verdict.ok:
            return verdict
        if not autoscaling or time.monotonic() >= deadline:
            lines = []
            for request in requests:
                if request.name in verdict.never:
                    hint = advice(request, nodes)
                    lines.append(
                        f"  {request.name}: {verdict.never[request.name]}"
                        + (f"; to fit this cluster: {hint}" if hint else "")
                    )
            cause = (
                f"not placeable after waiting {timeout_s:g} s for the autoscaler"
                if autoscaling
                else "can never be placed (no autoscaler can add nodes)"
            )
            raise ResourceError(
                f"{what} {cause}; the cluster has "
                f"{' | '.join(describe(n) for n in nodes) or 'no nodes'}:\n" + "\n".join(lines)
            )
        if on_wait is not None:
            on_wait(dict(verdict.never))
        time.sleep(poll_s)
