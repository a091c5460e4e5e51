"""The multi-contrast MR cascade served: the ensemble deployment takes T1 in, T1 out and T2-SPIR and
answers exactly what local prediction does (registration included); a missing T2 is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.ensemble.inputs import plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.errors import DataError
from tests.train.test_multicontrast import train_multicontrast

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP_PORT, GRPC_PORT = 18347, 19347


def test_served_multicontrast_equals_local(ray_cluster, tmp_path: Path) -> None:
    from ray import serve

    from organseg.serve.app import ensemble_deployment_name
    from organseg.serve.runner import deploy, load_serve_config, serve_schema

    model_dir, data_root = train_multicontrast(tmp_path)
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    deployments = [
        {"name": "router", **small},
        {"name": ensemble_deployment_name("MR-T1-in"), **small},
        {"name": "member-cascade3d-mc", **small},
    ]
    schema = serve_schema(model_dir, deployments, http_port=HTTP_PORT, grpc_port=GRPC_PORT)
    deploy(load_serve_config(schema), timeout_s=300)
    try:
        item = plan_inputs(data_root / "Train_Sets" / "MR" / "1", "MR-T1-in", True, True)[0].load()
        local = EnsemblePredictor(model_dir).predict(item.image, "MR-T1-in", item.partner, item.t2)
        handle = serve.get_deployment_handle(
            ensemble_deployment_name("MR-T1-in"), app_name="organseg"
        )
        served = handle.segment.remote(item.image, "MR-T1-in", item.partner, item.t2).result()
        np.testing.assert_array_equal(served.labels.array, local.labels.array)
        assert served.members == ["cascade3d-mc"]
        with pytest.raises(DataError, match="T2-SPIR series is missing"):
            handle.segment.remote(item.image, "MR-T1-in", item.partner).result()
    finally:
        serve.shutdown()
