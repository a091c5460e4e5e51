"""Serving under faults and load, on loopback against the real graph (one deployment for the module).

The application here requires a bearer token, stalls uploads out after 1 s, keeps the CT ensemble's
queue short (so a burst overflows it) and checks replica health every second (so a killed replica is
replaced quickly). Every stream of requests goes through the organseg clients, which retry what a
restarting or full service refuses.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from organseg.ensemble.inputs import PredictInput
from organseg.ensemble.version import model_version
from organseg.io.volume import Modality
from organseg.serve.client import (
    NO_RETRY,
    GrpcBackend,
    GrpcClient,
    HttpBackend,
    HttpClient,
    ServiceError,
)
from organseg.serve.ops import tempdirs
from tests.conftest import loopback_serve_config, serving
from tests.serve.conftest import GRPC_PORT, HTTP_PORT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "test-token-0123456789"
HTTP = f"http://127.0.0.1:{HTTP_PORT}"
GRPC = f"127.0.0.1:{GRPC_PORT}"
APP = "organseg"


def _schema(model_dir: Path | str, token_file: Path) -> dict:
    checked = {"health_check_period_s": 1}
    member = {
        **checked,
        "max_ongoing_requests": 8,
        "max_queued_requests": 16,
        "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
    }
    settings = {
        "router": {**checked, "max_ongoing_requests": 24, "max_queued_requests": 8,
                   "backpressure_config": {"retry_after_s": 1}},
        "ensemble-CT": {**checked, "max_ongoing_requests": 2, "max_queued_requests": 1},
        "ensemble-MR-T2SPIR": checked,
        "member-dualtail": member,
        "member-attn": member,
    }  # fmt: skip
    return loopback_serve_config(model_dir, HTTP_PORT, GRPC_PORT, settings,
                                 max_voxels=30_000_000, max_request_mb=128,
                                 api_token_file=str(token_file), body_timeout_s=1.0,
                                 retry_budget_s=60.0)  # fmt: skip


@pytest.fixture(scope="module")
def app(trained_ensemble, ray_cluster, tmp_path_factory):
    config, report = trained_ensemble
    root = tmp_path_factory.mktemp("ops")
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    with serving(_schema(report.model_dir, token_file)):
        yield {
            "config": config,
            "model_dir": Path(report.model_dir),
            "token_file": token_file,
            "root": root,
        }


@pytest.fixture(scope="module")
def ct_image(app):
    from organseg.io import discover_cases, load_case
    from organseg.train.data import dataset_root

    ref = next(r for r in discover_cases(dataset_root(app["config"])) if r.modality is Modality.CT)
    return ref, load_case(ref, with_label=False).image


@pytest.fixture(scope="module")
def baseline(app, ct_image):
    """The fault-free answer (DICOM series in) that every answer below must equal."""
    ref, image = ct_image
    return HttpBackend(HTTP, 120, TOKEN).predict(PredictInput(ref.case_id, image), None)


def _replicas(deployment: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")]
    )
    return sorted(a.pid for a in actors)


def _backends() -> list:
    return [HttpBackend(HTTP, 120, TOKEN), GrpcBackend(GRPC, 120, TOKEN)]


def _stream(n: int, backends: list, ct_image) -> list:
    """``n`` DICOM-series requests, three at a time, alternating HTTP and gRPC; answers or errors."""
    ref, image = ct_image

    def one(i: int):
        try:
            return backends[i % len(backends)].predict(PredictInput(ref.case_id, image), None)
        except Exception as exc:  # collected: the test asserts there are none
            return exc

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        return list(pool.map(one, range(n)))


def _assert_all_equal(results: list, baseline) -> None:
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures[:3]
    for result in results:
        np.testing.assert_array_equal(result.labels.array, baseline.labels.array)


# -- access ---------------------------------------------------------------------------------------------
def test_token_required_on_both_protocols_health_stays_open(app, ct_image) -> None:
    from organseg.serve.proto import segmentation_pb2 as pb

    no_token = httpx.get(f"{HTTP}/v1/models")
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert no_token.json()["request_id"] == no_token.headers["x-request-id"]
    wrong = httpx.get(f"{HTTP}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    upload = httpx.post(f"{HTTP}/v1/segment", files={"file": ("v.raw", b"x")})
    assert upload.status_code == 401  # refused before the body is read
    ok = httpx.get(f"{HTTP}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert httpx.get(f"{HTTP}/healthz").status_code == 200
    assert httpx.get(f"{HTTP}/readyz", timeout=30).status_code == 200

    for token in ("", "nope"):
        with pytest.raises(ServiceError, match="UNAUTHENTICATED"):
            GrpcClient(GRPC, token=token, retry=NO_RETRY).models()
    assert (
        GrpcClient(GRPC, token=TOKEN).models().model_version == model_version(app["model_dir"]).id
    )
    assert GrpcClient(GRPC, token="").call("Health", pb.HealthRequest()).status == "ok"
    with pytest.raises(ServiceError, match="401"):
        HttpClient(HTTP, token="", retry=NO_RETRY).models()


def test_request_ids_in_headers_and_error_bodies(app) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "client-chosen-42"}
    bad = httpx.post(f"{HTTP}/v1/segment", headers=auth, files={"file": ("v.nii", b"not a volume")})
    assert 400 <= bad.status_code < 500
    assert bad.headers["x-request-id"] == "client-chosen-42"
    assert bad.json()["request_id"] == "client-chosen-42"


# -- load -----------------------------------------------------------------------------------------------
def _slow_sender(stop: threading.Event, stalled: bool, results: list) -> None:
    """Send a multipart upload one byte per 0.1 s (or stall after a few bytes) over a raw socket;
    record the status line of the answer (or that it was still sending when told to stop)."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="v.raw"\r\n\r\n'
        + b"\0" * 4000
    )
    head = (
        f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body) + 8}\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(0.1)
        for i, byte in enumerate(body):
            if stop.is_set():
                results.append(b"still sending")
                return
            try:
                if not stalled or i < 10:
                    sock.sendall(bytes([byte]))
                answer += sock.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
            if answer:
                break  # the server answered early
        sock.settimeout(15)
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            answer += repr(exc).encode()
    results.append(answer.split(b"\r\n", 1)[0])


def test_slow_senders_neither_delay_requests_nor_health(app, ct_image, baseline) -> None:
    client = HttpClient(HTTP, token=TOKEN)
    image = ct_image[1]

    def timed() -> float:
        started = time.perf_counter()
        client.segment(image, output_format="raw")
        return time.perf_counter() - started

    quiet = min(timed() for _ in range(3))
    stop, results = threading.Event(), []
    senders = [
        threading.Thread(target=_slow_sender, args=(stop, False, results), daemon=True)
        for _ in range(9)
    ]
    stalled = threading.Thread(target=_slow_sender, args=(stop, True, results), daemon=True)
    for t in [*senders, stalled]:
        t.start()
    try:
        time.sleep(0.5)  # the senders hold router slots now
        health = []
        for _ in range(5):
            started = time.perf_counter()
            assert httpx.get(f"{HTTP}/healthz", timeout=5).status_code == 200
            health.append(time.perf_counter() - started)
        loaded = min(timed() for _ in range(3))
        stalled.join(timeout=10)
    finally:
        stop.set()
        for t in senders:
            t.join(timeout=20)
    assert max(health) < 1.0, health
    assert loaded <= 2 * quiet + 0.05, (quiet, loaded)  # 50 ms of slack for a 2-core box's jitter
    assert any(r.startswith(b"HTTP/1.1 408") for r in results), results  # the stalled upload


def test_burst_beyond_the_queue_gets_quick_503s_that_clients_retry(app, ct_image, baseline) -> None:
    from organseg.serve.wire import encode_raw

    raw = encode_raw(ct_image[1])
    data = raw.pop("data")
    form = {
        k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v) for k, v in raw.items()
    }
    form.update(modality="CT", output_format="raw")
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def bare(_: int) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        r = httpx.post(f"{HTTP}/v1/segment", files={"file": ("v.raw", data)}, data=form,
                       headers=headers, timeout=120)  # fmt: skip
        return r.status_code, time.perf_counter() - started, r.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(bare, range(12)))
    refused = [a for a in answers if a[0] == 503]
    assert refused, answers
    assert {a[0] for a in answers} <= {200, 503}
    assert all(a[2] is not None and int(a[2]) >= 1 for a in refused)
    slowest_ok = max(a[1] for a in answers if a[0] == 200)
    assert max(a[1] for a in refused) < slowest_ok  # refused at once, not after queueing

    client = HttpClient(HTTP, token=TOKEN)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(
            pool.map(lambda _: client.segment(ct_image[1], output_format="raw"), range(12))
        )
    _assert_all_equal(results, baseline)


def test_router_killed_while_decoding_answers_within_seconds_a_status_clients_retry(app) -> None:
    """The router replica SIGKILLed with a 64 MiB upload in flight: the request is answered within
    seconds (Serve's proxy: a plain 500 without organseg's request id, which the clients retry), and
    the dead replica's private upload folder is swept once a new router runs."""
    (pid,) = _replicas("router")
    private = Path(tempfile.gettempdir()) / f"{tempdirs.PREFIX}{pid}"
    volume = np.zeros((64, 512, 512), np.float32)
    volume[-1, -1, -1] = np.nan
    payload = volume.tobytes()
    del volume
    fields = {"shape": "64,512,512", "dtype": "float32", "modality": "CT"}
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    started = time.monotonic()
    killer.start()
    response = httpx.post(f"{HTTP}/v1/segment", files={"file": ("v", payload)}, data=fields,
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)  # fmt: skip
    killer.join()
    waited = time.monotonic() - started
    assert waited < 15, waited
    if response.status_code != 400:  # 400: decoded (NaN refused) before the kill landed
        assert response.status_code in (500, 502, 503, 504), response.text
        assert "request_id" not in response.text  # the proxy's: retried by HttpClient
    client = HttpClient(HTTP, token=TOKEN)
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline and (not _replicas("router") or private.exists()):
        with pytest.raises(ServiceError, match="'shape'"):  # the new router answers (and sweeps)
            client.segment_bytes(b"\0" * 8, "v", {"shape": "1e30,1,1"})
        time.sleep(1)
    assert not private.exists()


# -- faults ---------------------------------------------------------------------------------------------
# The router first: retries inside the graph are counted by the replicas that survive (metrics test).
@pytest.mark.parametrize("deployment", ["router", "ensemble-CT", "member-attn"])
def test_killing_a_replica_loses_no_request(app, ct_image, baseline, deployment: str) -> None:
    (pid,) = _replicas(deployment)
    private = Path(tempfile.gettempdir()) / f"{tempdirs.PREFIX}{pid}"
    if deployment == "router":
        assert private.is_dir()  # the router's private upload folder

    def kill_soon() -> None:
        time.sleep(0.6)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    results = _stream(9, _backends(), ct_image)
    killer.join()
    _assert_all_equal(results, baseline)
    assert [model_version(app["model_dir"]).id] == sorted({r.model_version for r in results})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = _replicas(deployment)
        if alive and pid not in alive and not private.exists():
            break
        time.sleep(0.5)
    (new_pid,) = _replicas(deployment)
    assert new_pid != pid
    # a new router replica swept what the killed one had on disk (uploads in flight included)
    assert not private.exists()


# -- live model update ----------------------------------------------------------------------------------
def test_live_model_switch_under_load(app, ct_image, baseline) -> None:
    from organseg.serve.runner import deploy, load_serve_config

    old = model_version(app["model_dir"])
    new_dir = app["root"] / "model-v2"
    shutil.copytree(app["model_dir"], new_dir)
    spec = yaml.safe_load((new_dir / "ensemble.yaml").read_text())
    spec["created"] = "2030-01-01T00:00:00+00:00"  # same weights, a new model directory version
    (new_dir / "ensemble.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    new = model_version(new_dir)
    assert new.id != old.id

    backends = _backends()
    stop, results = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            results.extend(_stream(3, backends, ct_image))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(results) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)  # answers from the old version first
        switched = deploy(load_serve_config(_schema(new_dir, app["token_file"])), timeout_s=120)
        assert switched == [APP]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            getattr(r, "model_version", None) == new.id for r in results[-3:]
        ):
            time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=120)
    _assert_all_equal(results, baseline)
    versions = [r.model_version for r in results]
    assert versions[0] == old.id
    assert versions[-1] == new.id
    assert set(versions) == {old.id, new.id}
    switch = versions.index(new.id)  # never back to the old one once answered by the new one
    assert all(v == new.id for v in versions[switch + 3 :])
    assert HttpClient(HTTP, token=TOKEN).models()["model_version"] == new.id
    assert GrpcClient(GRPC, token=TOKEN).models().model_version == new.id


# -- observability --------------------------------------------------------------------------------------
def _scrape() -> str:
    import ray

    texts = []
    for node in ray.nodes():
        if node["Alive"]:
            port = node["MetricsExportPort"]
            texts.append(
                httpx.get(f"http://{node['NodeManagerAddress']}:{port}/metrics", timeout=10).text
            )
    return "\n".join(texts)


def _total(text: str, name: str, **tags: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric != name:
            continue
        if all(f'{k}="{v}"' in line for k, v in tags.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metric(text: str, suffix: str) -> str:
    names = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if not line.startswith("#")
    }
    (name,) = [n for n in names if n.endswith(suffix) and "organseg_" in n]
    return name


def test_prometheus_metrics_move(app, ct_image) -> None:
    # Ray exports application metrics with its ``ray_`` prefix; absent until a first request is counted
    requests_total = "ray_organseg_requests_total"
    before = _total(_scrape(), requests_total, modality="CT", outcome="ok")
    client = HttpClient(HTTP, token=TOKEN)
    for _ in range(2):
        client.segment(ct_image[1], output_format="raw")
    with pytest.raises(ServiceError):
        HttpClient(HTTP, token="nope", retry=NO_RETRY).models()
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        text = _scrape()
        # each replica exports its metrics on its own schedule: wait for both figures
        if (
            _total(text, requests_total, modality="CT", outcome="ok") >= before + 2
            and _total(text, requests_total, outcome="unauthenticated") >= 1
        ):
            break
        time.sleep(1)
    assert _total(text, requests_total, modality="CT", outcome="ok") >= before + 2
    assert _total(text, requests_total, outcome="unauthenticated") >= 1
    assert _total(text, _metric(text, "organseg_slices_total"), modality="CT") > 0
    stages = _metric(text, "organseg_stage_seconds_count")
    for stage in ("preprocess", "members", "postprocess", "router_total"):
        assert _total(text, stages, stage=stage) > 0, stage
    assert _total(text, _metric(text, "organseg_member_disagreement_count"), organ="liver") > 0
    # organseg_retries_total appears once a call inside the graph was retried; whether the kills above
    # made the graph retry or only the clients depends on where the requests were when the replica died
