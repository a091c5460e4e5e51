"""`organseg serve deploy/serve/gpu.yaml` without GPUs names the deployments that cannot be placed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from organseg.config import parse_config
from organseg.ensemble.spec import write_untrained_model_dir
from organseg.resources import ResourceError
from organseg.serve.runner import deploy, load_serve_config, replica_requests

pytestmark = [pytest.mark.ray]

GPU_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "serve" / "gpu.yaml"


def test_gpu_profile_on_a_cpu_cluster_fails_naming_the_deployments(
    ray_cluster: str, tmp_path: Path
) -> None:
    tiny = {"arch": "attention_unet", "kwargs": {"base_channels": 8, "depth": 4}}
    config = parse_config(
        {
            "name": "gpu-profile",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 64},
            "members": [{"name": "ternausnet", **tiny}, {"name": "linknet34", **tiny}],
        }
    )
    model_dir = write_untrained_model_dir(config, tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the profile's other members are absent from this model
        schema = load_serve_config(GPU_PROFILE, model_dir=model_dir)
    asks = {r.name: r.bundles for r in replica_requests(schema)}
    assert asks["member-ternausnet"][0]["GPU"] > 0
    assert set(asks) == {"router", "ensemble-CT", "member-ternausnet", "member-linknet34"}
    with pytest.raises(ResourceError) as caught:
        deploy(schema, autoscaling=False)
    message = str(caught.value)
    assert "member-ternausnet" in message
    assert "member-linknet34" in message
    assert "GPU" in message
    assert "num_gpus: 0" in message
    assert "router:" not in message  # deployments that fit are not blamed
