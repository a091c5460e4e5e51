"""Every private Ray entry organseg uses still has the shape organseg calls.

Ray 2.60 has no public call for these; a Ray upgrade that moves or renames one must fail here, not in
a deployment. The entries (and who uses them):

- ``ray.serve.context._get_global_client`` → ``ServeControllerClient.deploy_apps`` and
  ``get_serve_details`` (``organseg.serve.runner``: deploy a Serve config with its per-deployment
  settings, as ``serve run CONFIG`` does; read the running applications for a live model switch);
- ``ray.serve.context._get_serve_request_context`` (``organseg.serve.ops.requests``: the request id
  Serve assigned);
- ``ray.serve._private.default_impl.add_grpc_address`` (``organseg.serve.ops.bind``: bind the gRPC
  proxy to the HTTP host; without it ``organseg serve`` refuses rather than listen everywhere);
- ``ray._private.state.available_resources_per_node`` and ``state.state.get_cluster_config``
  (``organseg.runtime``: what each node has free; whether an autoscaler is present);
- ``ray.init(_node_ip_address=...)`` (``organseg.runtime.ray_session``: a local cluster reachable
  from this host only).
"""

from __future__ import annotations

import inspect

import pytest
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


def test_the_request_context_carries_the_request_id() -> None:
    from ray.serve.context import _get_serve_request_context

    assert inspect.signature(_get_serve_request_context).parameters == {}
    assert hasattr(_get_serve_request_context(), "request_id")


def test_the_grpc_bind_hook_takes_a_server_and_an_address() -> None:
    from ray.serve._private import default_impl

    params = inspect.signature(default_impl.add_grpc_address).parameters
    assert list(params) == ["grpc_server", "server_address"]


def test_grpc_bind_fails_loudly_when_ray_moved_its_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the hook, gRPC would listen on every interface: refused, naming what is missing."""
    from ray.serve._private import default_impl

    from organseg.serve.ops import bind

    monkeypatch.setenv(bind.GRPC_HOST_ENV, "127.0.0.1")
    monkeypatch.delattr(default_impl, "add_grpc_address")  # renamed or moved by a Ray upgrade
    with pytest.raises(bind.GrpcBindUnavailable, match=r"add_grpc_address.*every interface"):
        bind.grpc_on_http_host()
    monkeypatch.delenv(bind.GRPC_HOST_ENV)
    bind.grpc_on_http_host()  # not asked to bind anywhere: nothing to refuse


def test_grpc_bind_rewrites_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.serve._private import default_impl

    from organseg.serve.ops import bind

    seen: list[str] = []
    monkeypatch.setattr(
        default_impl, "add_grpc_address", lambda server, address: seen.append(address)
    )
    monkeypatch.setenv(bind.GRPC_HOST_ENV, "127.0.0.1")
    bind.grpc_on_http_host()
    default_impl.add_grpc_address(None, "[::]:9000")
    assert seen == ["127.0.0.1:9000"]


def test_node_resources_and_cluster_config() -> None:
    from ray._private import state

    assert inspect.signature(state.available_resources_per_node).parameters == {}
    assert inspect.signature(state.state.get_cluster_config).parameters == {}


def test_init_takes_the_node_ip_address() -> None:
    """``organseg serve --host 127.0.0.1`` starts its local cluster on loopback through this private
    keyword; Ray takes it from ``**kwargs`` (and refuses keywords it does not know)."""
    source = inspect.getsource(inspect.unwrap(ray.init))
    assert 'kwargs.pop("_node_ip_address"' in source
    assert "Unknown keyword argument" in source
