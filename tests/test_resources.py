"""The resource check's pure core: what can never be placed, what waits, and the advice that fits."""

from __future__ import annotations

import pytest

from organseg.config import parse_config
from organseg.resources import (
    Request,
    ResourceError,
    check,
    describe,
    never_fit_together,
    never_fits,
    settle,
)
from organseg.train.launcher import member_advice, member_request

LAPTOP = [{"CPU": 2.0, "memory": 8e9, "node:127.0.0.1": 1.0}]
GPU_NODE = [{"CPU": 16.0, "GPU": 1.0}]


def test_a_gpu_ask_never_fits_a_cpu_machine() -> None:
    request = Request("unet", ({"CPU": 4.0, "GPU": 0.5},))
    reason = never_fits(request, LAPTOP)
    assert reason is not None
    assert "0.5 GPU" in reason
    assert "0 GPU" in reason
    assert never_fits(request, GPU_NODE) is None


def test_a_process_larger_than_any_node_never_fits_even_if_the_sum_does() -> None:
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    assert never_fits(Request("big", ({"CPU": 3.0},)), nodes) is not None
    assert never_fits(Request("two", ({"CPU": 2.0}, {"CPU": 2.0})), nodes) is None
    assert never_fits(Request("three", ({"CPU": 1.5},) * 3), nodes) is not None  # cannot be packed


def test_waiting_is_what_fits_the_cluster_but_not_what_is_free() -> None:
    requests = [Request(f"m{i}", ({"CPU": 1.0, "GPU": 0.5},)) for i in range(3)]
    verdict = check(requests, GPU_NODE, available=[{"CPU": 16.0, "GPU": 1.0}])
    assert verdict.ok
    assert list(verdict.waiting) == ["m2"]  # two halves of the GPU are taken by m0 and m1
    assert "0.5 GPU" in verdict.waiting["m2"]


def test_replicas_that_must_run_together() -> None:
    requests = [Request("router", ({"CPU": 1.0},)), Request("member", ({"CPU": 1.5},) * 2)]
    assert never_fits(requests[1], [{"CPU": 4.0}]) is None
    assert list(never_fit_together(requests, [{"CPU": 3.0}])) == ["member"]
    assert never_fit_together(requests, [{"CPU": 4.0}]) == {}


def test_member_request_and_the_overrides_that_fit() -> None:
    config = parse_config(
        {
            "name": "r",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "members": [
                {"name": "small", "arch": "dualtail"},
                {"name": "big", "arch": "dualtail", "use_gpu": True, "gpu_fraction": 0.5,
                 "cpus_per_worker": 4},
                {"name": "wide", "arch": "dualtail", "num_workers": 4, "cpus_per_worker": 1},
            ],
        }
    )  # fmt: skip
    big = member_request(config, config.member("big"))
    assert big.bundles == ({"CPU": 4.0, "GPU": 0.5},)
    assert big.source == "members.1"
    advice = member_advice(big, LAPTOP)
    assert "--set members.1.use_gpu=false" in advice
    assert "--set members.1.cpus_per_worker=2" in advice
    wide = member_request(config, config.member("wide"))
    assert member_advice(wide, LAPTOP) == "--set members.2.num_workers=2"
    assert describe({"CPU": 4.0, "GPU": 0.5, "node:x": 1.0}) == "4 CPU + 0.5 GPU"


def test_settle_waits_for_the_autoscaler_reading_the_cluster_it_is_handed() -> None:
    """The wait is pure: each poll reads the cluster through the reader the Ray glue hands in."""
    cpu, gpu = {"CPU": 4.0}, {"CPU": 4.0, "GPU": 1.0}
    reads: list[int] = []

    def grows() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        reads.append(1)
        nodes = [cpu] if len(reads) < 3 else [cpu, gpu]  # the autoscaler adds a GPU node
        return nodes, nodes

    asks = [Request("unet", ({"CPU": 1.0, "GPU": 1.0},))]
    seen: list[dict[str, str]] = []
    verdict = settle(asks, what="x", advice=lambda r, n: "", read=grows, autoscaling=True,
                     poll_s=0.0, on_wait=seen.append)  # fmt: skip
    assert (verdict.ok, len(reads), len(seen)) == (True, 3, 2)
    with pytest.raises(ResourceError, match="no autoscaler can add nodes"):
        settle(
            asks, what="x", advice=lambda r, n: "", read=lambda: ([cpu], [cpu]), autoscaling=False
        )
