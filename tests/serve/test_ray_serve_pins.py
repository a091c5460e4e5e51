"""The one private Ray Serve entry organseg uses still has the shape organseg calls.

``organseg.serve.runner`` deploys a Serve config (with its per-deployment settings) through the client
``serve run CONFIG`` uses, because Ray 2.60 has no public Python call for that; a Ray upgrade that moves
or renames it must fail here, not in a deployment.
"""

from __future__ import annotations

import inspect

import ray
from ray.serve._private.client import ServeControllerClient
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema


def test_ray_is_the_pinned_minor_series() -> None:
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert (major, minor) >= (2, 60)
    assert (major, minor) < (2, 70)


def test_deploy_apps_takes_a_deploy_schema_without_blocking() -> None:
    params = inspect.signature(ServeControllerClient.deploy_apps).parameters
    assert list(params)[:2] == ["self", "config"]
    assert "_blocking" in params
    assert ServeDeploySchema.__name__ in str(params["config"].annotation)


def test_global_client_can_be_asked_for() -> None:
    params = inspect.signature(_get_global_client).parameters
    assert "raise_if_no_controller_running" in params


def test_serve_details_list_the_deployed_app_configs() -> None:
    """A live model switch reads the running applications' configs from here."""
    params = inspect.signature(ServeControllerClient.get_serve_details).parameters
    assert list(params) == ["self"]
