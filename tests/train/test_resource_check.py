"""Members that can never be placed fail at once, naming themselves and the overrides that fit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from organseg.resources import Request, ResourceError, settle
from organseg.runtime import cluster_resources
from organseg.train.launcher import member_advice, train_experiment
from tests.conftest import tiny_experiment

pytestmark = [pytest.mark.ray]


def test_gpu_members_on_a_cpu_cluster_fail_before_training(
    ray_cluster: str, tmp_path: Path
) -> None:
    config = tiny_experiment(tmp_path, "no-gpu")
    config.members[1].use_gpu = True
    config.members[1].gpu_fraction = 0.5
    config.members[1].cpus_per_worker = 64
    started = time.monotonic()
    with pytest.raises(ResourceError) as caught:
        train_experiment(config, autoscaling=False)
    message = str(caught.value)
    assert "attn" in message
    assert "dualtail" not in message  # the member that fits is not blamed
    assert "--set members.1.use_gpu=false" in message
    assert "--set members.1.cpus_per_worker=4" in message
    assert "no autoscaler" in message
    assert not (tmp_path / "runs" / "no-gpu" / "train" / "attn" / "organseg-outcome.json").exists()
    assert time.monotonic() - started < 60  # it does not wait for Ray Train to give up


def test_with_an_autoscaler_it_waits_saying_what_is_missing_then_gives_up(ray_cluster: str) -> None:
    seen: list[dict[str, str]] = []
    request = Request("unet", ({"CPU": 1.0, "GPU": 0.5},), source="members.0")
    with pytest.raises(ResourceError, match=r"after waiting 0\.6 s") as caught:
        settle(
            [request],
            what="1 member(s)",
            advice=member_advice,
            read=cluster_resources,
            autoscaling=True,
            timeout_s=0.6,
            poll_s=0.2,
            on_wait=seen.append,
        )
    assert seen
    assert "0.5 GPU" in seen[0]["unet"]
    assert "--set members.0.use_gpu=false" in str(caught.value)
    fits = [Request("cpu", ({"CPU": 1.0},))]
    assert settle(
        fits, what="x", advice=member_advice, read=cluster_resources, autoscaling=False
    ).ok
