"""Starting the application from a Serve config file: what ``organseg serve`` (and the tests) run.

The config is deployed exactly as ``serve run CONFIG`` deploys it (Ray applies the per-deployment
overrides), with the model directory and ports optionally overridden on the command line.

Deploying against an application that is already running with another model directory of the same
graph (same members and modalities) is a *live switch*: the application's args stay as they are and
every deployment gets ``user_config.model_dir``, which the replicas load in place (see
``deployments.py``); no replica restarts and no request fails. A different graph is redeployed as Serve
always does (a rolling update; clients retry what it refuses meanwhile).
"""

from __future__ import annotations

import copy
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ray import serve
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema

from organseg.config import read_yaml
from organseg.errors import ConfigError, OrgansegError
from organseg.resources import Request, largest_node, settle
from organseg.runtime import autoscaler_present, cluster_resources
from organseg.serve.app import APP_NAME, GRPC_SERVICER
from organseg.shipped import serve_profile
from organseg.uri import is_uri

BUILD_APP = "organseg.serve.app:build_app"


def serve_schema(
    model_dir: Path | str | None,
    deployments: Iterable[Mapping[str, Any]] = (),
    *,
    http_port: int | None = None,
    grpc_port: int | None = None,
    host: str = "127.0.0.1",
    **args: Any,
) -> dict[str, Any]:
    """A Serve config with one organseg application, as a mapping (what deploy/serve/*.yaml hold):
    ``model_dir`` and ``args`` are the application's args (:class:`~organseg.serve.app.AppArgs`),
    ``deployments`` its per-deployment settings. Pass it to :func:`load_serve_config`."""
    http: dict[str, Any] = {"host": host}
    if http_port is not None:
        http["port"] = http_port
    app_args = {**({"model_dir": str(model_dir)} if model_dir is not None else {}), **args}
    app: dict[str, Any] = {
        "name": APP_NAME,
        "route_prefix": "/",
        "import_path": BUILD_APP,
        "args": app_args,
    }
    if deployments:
        app["deployments"] = [dict(d) for d in deployments]
    return {
        "http_options": http,
        "grpc_options": {} if grpc_port is None else {"port": grpc_port},
        "applications": [app],
    }


def load_serve_config(
    path: Path | str | Mapping[str, Any] | None = None,
    model_dir: Path | str | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    host: str | None = None,
) -> ServeDeploySchema:
    """Read a Serve config (a file, an already-parsed mapping, or by default the shipped local CPU
    profile) and apply command-line overrides."""
    if path is None:
        path = serve_profile()
    if isinstance(path, Mapping):
        data: dict[str, Any] = dict(path)
    else:
        data = read_yaml(Path(path), "Serve config")
    data = copy.deepcopy(data)
    http = data.setdefault("http_options", {})
    if http_port is not None:
        http["port"] = http_port
    if host is not None:
        http["host"] = host
    http.setdefault("host", "127.0.0.1")  # loopback unless the config or --host says otherwise
    grpc = data.setdefault("grpc_options", {})
    grpc.setdefault("grpc_servicer_functions", [GRPC_SERVICER])
    if grpc_port is not None:
        grpc["port"] = grpc_port
    for app in data.get("applications", []):
        args = app.setdefault("args", {})
        if model_dir is not None:
            args["model_dir"] = str(Path(model_dir).resolve())
        elif args.get("model_dir") and not is_uri(args["model_dir"]):
            # relative to where the command runs, as `serve run` would read it; absolute for the replicas
            args["model_dir"] = str(Path(args["model_dir"]).resolve())
    for app in data.get("applications", []):
        _drop_absent_deployments(app)
    try:
        return ServeDeploySchema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{path or 'Serve config'}: invalid ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})"
        ) from None


def _drop_absent_deployments(app: dict[str, Any]) -> None:
    """Keep only the per-deployment settings that name a deployment of this model directory's graph.

    A profile written for one ensemble (its member names) can then serve another model directory: settings
    for members it lacks are dropped with a note instead of failing the whole deployment.
    """
    model_dir = (app.get("args") or {}).get("model_dir")
    if not model_dir or app.get("import_path") != BUILD_APP or not app.get("deployments"):
        return
    from organseg.ensemble.spec import load_spec
    from organseg.serve.app import AppArgs, deployment_names

    try:
        names = deployment_names(load_spec(model_dir), AppArgs.model_validate(app["args"]))
    except Exception:  # an unreadable model directory is reported by deploy(), with its own message
        return
    kept = [d for d in app["deployments"] if d.get("name") in names]
    dropped = sorted(d.get("name") for d in app["deployments"] if d.get("name") not in names)
    if dropped:
        import warnings

        warnings.warn(
            f"Serve config settings for {dropped} skipped: {model_dir} has no such deployments",
            stacklevel=3,
        )
    app["deployments"] = kept


def replica_requests(config: ServeDeploySchema) -> list[Request]:
    """What every deployment of the config's organseg applications asks: one bundle per replica.

    Replicas: ``num_replicas``, else the autoscaling minimum (at least 1, as Serve starts them); per replica
    the config's ``ray_actor_options``, else the deployment class's defaults.
    """
    from organseg.ensemble.spec import load_spec
    from organseg.serve.app import AppArgs, deployment_names
    from organseg.serve.deployments import EnsembleDeployment, MemberDeployment
    from organseg.serve.router import Router

    requests = []
    for app in config.applications:
        if app.import_path != BUILD_APP:
            continue
        names = deployment_names(load_spec(app.args["model_dir"]), AppArgs.model_validate(app.args))
        configured = {d.name: d.model_dump(exclude_unset=True) for d in app.deployments or []}
        for name in sorted(names):
            cls = (
                Router
                if name == "router"
                else (EnsembleDeployment if name.startswith("ensemble-") else MemberDeployment)
            )
            entry = configured.get(name, {})
            options = {**(cls.ray_actor_options or {}), **(entry.get("ray_actor_options") or {})}
            replicas = entry.get("num_replicas")
            if not isinstance(replicas, int):
                scaling = entry.get("autoscaling_config") or {}
                replicas = max(
                    1, int(scaling.get("initial_replicas") or scaling.get("min_replicas") or 1)
                )
            bundle = {"CPU": float(options.get("num_cpus", 1) or 0.0)}
            if options.get("num_gpus"):
                bundle["GPU"] = float(options["num_gpus"])
            if options.get("memory"):
                bundle["memory"] = float(options["memory"])
            bundle.update({k: float(v) for k, v in (options.get("resources") or {}).items()})
            requests.append(
                Request(name, (bundle,) * replicas, source=f"{app.name}/deployments/{name}")
            )
    return requests


def _replica_advice(request: Request, nodes: list[dict[str, float]]) -> str:
    largest = largest_node(nodes)
    bundle = request.bundles[0]
    hints = []
    if bundle.get("GPU", 0.0) > largest.get("GPU", 0.0):
        hints.append(
            "ray_actor_options.num_gpus: 0 (runs on CPU; deploy/serve/local.yaml is the CPU profile)"
            if not largest.get("GPU")
            else f"ray_actor_options.num_gpus: {largest['GPU']:g} or less"
        )
    if bundle.get("CPU", 0.0) > largest.get("CPU", 0.0):
        hints.append(f"ray_actor_options.num_cpus: {largest.get('CPU', 0.0):g} or less")
    if not hints and len(request.bundles) > 1:
        hints.append("fewer replicas (num_replicas or autoscaling_config.min_replicas)")
    return f"set {' and '.join(hints)} for {request.name}" if hints else ""


class DeployInterrupted(OrgansegError):
    """A stop was requested (SIGTERM/SIGINT) before the deployment finished."""


def plan_live_switch(
    config: ServeDeploySchema, running: Mapping[str, Mapping[str, Any]]
) -> tuple[ServeDeploySchema, list[str]]:
    """Turn a new model directory for a running application of the same graph into an in-place switch.

    ``running`` maps application names to their deployed config (``ServeApplicationSchema`` dumps).
    Returns the config to apply and the names of the applications switched in place.
    """
    from organseg.ensemble.spec import load_spec
    from organseg.serve.app import AppArgs, deployment_names

    data = config.model_dump(exclude_unset=True)
    switched = []
    for app in data.get("applications", []):
        old = running.get(app["name"])
        if not old or app.get("import_path") != BUILD_APP or old.get("import_path") != BUILD_APP:
            continue
        new_args, old_args = dict(app.get("args") or {}), dict(old.get("args") or {})
        new_dir, base_dir = new_args.get("model_dir"), old_args.get("model_dir")
        if not new_dir or not base_dir:
            continue
        if {k: v for k, v in new_args.items() if k != "model_dir"} != {
            k: v for k, v in old_args.items() if k != "model_dir"
        }:
            continue  # other args changed too: a real redeploy
        try:
            old_names = deployment_names(load_spec(base_dir), AppArgs.model_validate(old_args))
            new_names = deployment_names(load_spec(new_dir), AppArgs.model_validate(new_args))
        except Exception:
            continue
        if old_names != new_names:
            continue
        app["args"] = {**new_args, "model_dir": base_dir}  # unchanged args: no replica restarts
        by_name = {d["name"]: d for d in app.get("deployments") or []}
        for name in sorted(new_names):
            entry = by_name.setdefault(name, {"name": name})
            entry["user_config"] = {**(entry.get("user_config") or {}), "model_dir": new_dir}
        app["deployments"] = list(by_name.values())
        switched.append(app["name"])
    return ServeDeploySchema.model_validate(data), switched


def _running_apps(client: Any) -> dict[str, dict[str, Any]]:
    try:
        details = client.get_serve_details()
    except Exception:
        return {}
    apps = {}
    for name, app in (details.get("applications") or {}).items():
        deployed = app.get("deployed_app_config")
        if deployed and app.get("status") in ("RUNNING", "DEPLOYING"):
            apps[name] = deployed
    return apps


def shutdown() -> None:
    """Stop every Serve application on the cluster (so the command line needs no Ray import of its own)."""
    serve.shutdown()


def deploy(
    config: ServeDeploySchema,
    timeout_s: float = 600.0,
    autoscaling: bool | None = None,
    resource_wait_s: float = 600.0,
    stop: threading.Event | None = None,
) -> list[str]:
    """Start Serve with the config's HTTP/gRPC options, deploy its applications and wait until RUNNING.

    Before anything starts, every deployment's replicas are compared with the cluster: ones that can never
    be placed (a GPU deployment on a machine without GPUs) fail at once, naming the deployments and why,
    unless an autoscaler may add nodes (then this waits up to ``resource_wait_s``).

    Returns the applications that were switched to a new model directory in place (see the module
    docstring). ``stop`` (set from a signal handler) ends the wait early with :class:`DeployInterrupted`.
    """
    for app in config.applications:
        if not (app.args or {}).get("model_dir"):
            raise ConfigError(f"application {app.name!r} has no args.model_dir; pass --model-dir")
        from organseg.ensemble.spec import load_spec

        load_spec(app.args["model_dir"])  # a clear error before any replica tries
    requests = replica_requests(config)
    settle(
        requests,
        what="Serve deployments",
        advice=_replica_advice,
        read=cluster_resources,
        autoscaling=autoscaler_present() if autoscaling is None else autoscaling,
        timeout_s=resource_wait_s,
        together=True,
        on_wait=lambda missing: warnings.warn(
            "waiting for resources: " + "; ".join(f"{n}: {w}" for n, w in missing.items()),
            stacklevel=2,
        ),
    )
    serve.start(
        proxy_location=config.proxy_location,
        http_options=config.http_options.model_dump(),
        grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
    )
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    running = _running_apps(client)
    config, switched = plan_live_switch(config, running) if running else (config, [])
    _deploy_config(config)
    wait_until_running([a.name for a in config.applications], timeout_s, stop)
    return switched


def _deploy_config(config: ServeDeploySchema) -> None:
    """Submit every application of ``config`` with its per-deployment settings, as ``serve run CONFIG`` does.

    Ray 2.60 has no public Python call for this: ``serve.run`` takes one built Application and never sees a
    config's ``deployments`` overrides, and ``serve deploy`` goes through the dashboard's REST API (which
    needs the dashboard and, under token auth, a token). So this uses the client ``serve run`` itself uses,
    ``ray.serve.context._get_global_client().deploy_apps`` (private). It is pinned twice: ``ray<2.70`` in
    pyproject.toml and tests/serve/test_ray_serve_pins.py, which fails when its signature changes.
    """
    from ray.serve.context import _get_global_client

    _get_global_client().deploy_apps(config, _blocking=False)


def wait_until_running(
    names: list[str], timeout_s: float, stop: threading.Event | None = None
) -> None:
    """Poll Serve until every application in ``names`` is RUNNING; an OrgansegError names a failed
    deploy or what is still pending after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    time.sleep(0.2)  # let the controller take the new config before reading its status
    while True:
        if stop is not None and stop.is_set():
            raise DeployInterrupted("stopped before the deployment finished")
        status = serve.status().applications
        states = {n: status[n].status if n in status else "NOT_STARTED" for n in names}
        failed = {
            n: status[n].message
            for n in names
            if n in status and status[n].status == "DEPLOY_FAILED"
        }
        if failed:
            raise OrgansegError(
                "; ".join(f"application {n} failed to deploy: {m}" for n, m in failed.items())
            )
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise OrgansegError(f"applications not running after {timeout_s:.0f} s: {states}")
        if stop is not None:
            stop.wait(0.5)
        else:
            time.sleep(0.5)
