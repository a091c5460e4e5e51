"""One Serve instance per test module: the tiny trained ensemble on loopback ports."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import loopback_serve_config, serving

HTTP_PORT, GRPC_PORT = 18345, 19345


def served_schema(model_dir) -> dict:
    """The Serve config of :func:`served`. Deployed again with another model directory of the same
    graph, it switches the running application to it in place (``organseg serve``'s live switch)."""
    batching = {"user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}}
    return loopback_serve_config(
        model_dir,
        HTTP_PORT,
        GRPC_PORT,
        {
            "ensemble-CT": {"user_config": {"threshold": 0.5}},
            "member-dualtail": batching,
            "member-attn": batching,
        },
        max_voxels=30_000_000,
        max_request_mb=128,
        # the tiny model's modality classifier passes the default gate (4 out-of-fold series per
        # modality); from 4 patients per kind its confidences are lower than the default 0.9 asks
        modality_min_confidence=0.75,
    )


@pytest.fixture(scope="module")
def served(trained_ensemble, ray_cluster):
    """The app deployed exactly as `organseg serve` deploys a config; yields (http url, grpc target, config)."""
    config, report = trained_ensemble
    with serving(served_schema(report.model_dir)):
        yield f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}", config, report.model_dir


def switch_to(http: str, schema: dict, model_dir: Path | str) -> dict:
    """Deploy ``schema`` (the running application's graph on ``model_dir``) to switch the application
    to ``model_dir`` in place (the live model switch); waits until /v1/models describes it and
    returns that answer."""
    from organseg.ensemble.version import model_version
    from organseg.serve.runner import deploy, load_serve_config

    switched = deploy(load_serve_config(schema), timeout_s=120)
    assert switched == ["organseg"]
    wanted, deadline = model_version(model_dir).id, time.monotonic() + 60
    while (models := httpx.get(f"{http}/v1/models", timeout=60).json())["model_version"] != wanted:
        assert time.monotonic() < deadline, f"still serving {models['model_version']}"
        time.sleep(0.2)
    return models
