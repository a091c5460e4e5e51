"""``organseg_*`` Prometheus metrics through Ray's metrics system (``ray.util.metrics``).

Ray exports them from every node's metrics agent (``/metrics`` on the node's metrics export port, the
port Ray's Prometheus service discovery file lists), with the replica's deployment tags added. Metric
objects are created lazily in the process that records them, so importing this module costs nothing
and code outside a Ray worker (unit tests, local prediction) records nothing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

STAGE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
DISAGREEMENT_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
#: Stage names of ``Prediction.timings`` and the router's own stages, as the histogram's ``stage`` tag.
STAGES = ("decode", "preprocess", "members", "postprocess", "ensemble_total", "router_total")


@functools.cache
def _metrics() -> dict[str, Any] | None:
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter, Histogram

    return {
        "requests": Counter(
            "organseg_requests",
            description="Requests answered, by protocol, modality and outcome.",
            tag_keys=("protocol", "modality", "outcome"),
        ),
        "slices": Counter(
            "organseg_slices", description="Slices segmented.", tag_keys=("modality",)
        ),
        "stage": Histogram(
            "organseg_stage_seconds",
            description="Latency of each stage of a segmentation request.",
            boundaries=STAGE_BUCKETS,
            tag_keys=("stage", "modality"),
        ),
        "disagreement": Histogram(
            "organseg_member_disagreement",
            description="Per organ: 1 - mean pairwise Dice between the members' masks.",
            boundaries=DISAGREEMENT_BUCKETS,
            tag_keys=("organ", "modality"),
        ),
        "retries": Counter(
            "organseg_retries",
            description="Calls retried after their replica died or was unavailable, by target.",
            tag_keys=("target", "reason"),
        ),
        "cancelled": Counter(
            "organseg_cancelled",
            description="Calls inside the graph cancelled because their client gave up (deadline, "
            "closed connection), by deployment.",
            tag_keys=("deployment",),
        ),
    }


def _safe(record: Any) -> None:
    try:
        metrics = _metrics()
        if metrics is not None:
            record(metrics)
    except Exception:  # metrics must never fail a request
        logger.debug("metric not recorded", exc_info=True)


def observe_request(rec: Any, outcome: str) -> None:
    """Count a finished request (and, when it segmented a volume, its slices, stages, disagreement)."""
    fields = rec.fields
    modality = str(fields.get("modality") or "unknown")

    def record(m: dict[str, Any]) -> None:
        if rec.route in ("/healthz", "/readyz", "Health"):
            return
        m["requests"].inc(1, {"protocol": rec.protocol, "modality": modality, "outcome": outcome})
        if outcome != "ok" or "slices" not in fields:
            return
        m["slices"].inc(int(fields["slices"]), {"modality": modality})
        stages = {**(fields.get("timings_s") or {})}
        if "decode_s" in fields:
            stages["decode"] = fields["decode_s"]
        for stage, seconds in stages.items():
            if stage in STAGES:
                m["stage"].observe(float(seconds), {"stage": stage, "modality": modality})
        for organ, value in (fields.get("uncertainty") or {}).items():
            m["disagreement"].observe(float(value), {"organ": organ, "modality": modality})

    _safe(record)


def count_retry(target: str, reason: str) -> None:
    _safe(lambda m: m["retries"].inc(1, {"target": target, "reason": reason}))


def count_cancelled(deployment: str) -> None:
    _safe(lambda m: m["cancelled"].inc(1, {"deployment": deployment}))
