"""One Serve instance per test module: the tiny trained ensemble on loopback ports."""

from __future__ import annotations

import pytest

HTTP_PORT, GRPC_PORT = 18345, 19345


def served_schema(model_dir) -> dict:
    """The Serve config of :func:`served`. Deployed again with another model directory of the same
    graph, it switches the running application to it in place (``organseg serve``'s live switch)."""
    from organseg.serve.runner import serve_schema

    small = {"ray_actor_options": {"num_cpus": 0.1}}
    batching = {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}
    deployments = [
        {"name": "router", **small},
        {"name": "ensemble-CT", **small, "user_config": {"threshold": 0.5}},
        {"name": "ensemble-MR-T2SPIR", **small},
        {"name": "member-dualtail", **small, "user_config": batching},
        {"name": "member-attn", **small, "user_config": batching},
    ]
    return serve_schema(
        model_dir,
        deployments,
        http_port=HTTP_PORT,
        grpc_port=GRPC_PORT,
        max_voxels=30_000_000,
        max_request_mb=128,
        # the tiny model's modality classifier passes the default gate (4 out-of-fold series per
        # modality); from 4 patients per kind its confidences are lower than the default 0.9 asks
        modality_min_confidence=0.75,
    )


@pytest.fixture(scope="module")
def served(trained_ensemble, ray_cluster):
    """The app deployed exactly as `organseg serve` deploys a config; yields (http url, grpc target, config)."""
    from ray import serve

    from organseg.serve.runner import deploy, load_serve_config

    config, report = trained_ensemble
    deploy(load_serve_config(served_schema(report.model_dir)), timeout_s=300)
    try:
        yield f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}", config, report.model_dir
    finally:
        serve.shutdown()
