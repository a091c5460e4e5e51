"""Request deadlines and autoscaling, on loopback against the real graph (one deployment for the module).

The model directory holds one untrained member (real architecture, meaningless masks) made heavy
enough (a 32-channel attention U-Net: about 0.5 s of CPU per 32-slice forward pass) that it is the
slowest stage of the graph, so a burst queues up on it and a long volume keeps it busy for many
seconds. The member deployment autoscales between 1 and 2 replicas with short delays.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from organseg.serve.client import NO_RETRY, GrpcClient, HttpClient, ServiceError
from tests.conftest import loopback_serve_config, serving
from tests.serve.conftest import GRPC_PORT, HTTP_PORT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP = f"http://127.0.0.1:{HTTP_PORT}"
GRPC = f"127.0.0.1:{GRPC_PORT}"
APP = "organseg"
MEMBER = "member-heavy"
CHUNK, BATCH = 8, 4  # slices per chunk, chunks per forward pass
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0.5,
    "downscale_delay_s": 2,
    "look_back_period_s": 1,
    "metrics_interval_s": 0.5,  # how often replicas and handles report (10 s by default)
}


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory):

    from organseg.config import parse_config
    from organseg.ensemble.spec import write_untrained_model_dir

    config = parse_config(
        {
            "name": "scaling",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 64},
            "members": [
                {"name": "heavy", "arch": "attention_unet",
                 "kwargs": {"base_channels": 32, "depth": 4}},
            ],
        }
    )  # fmt: skip
    model_dir = write_untrained_model_dir(config, tmp_path_factory.mktemp("scaling") / "model")
    member = {
        "max_ongoing_requests": 16,
        "autoscaling_config": AUTOSCALING,
        "user_config": {"max_batch_size": BATCH, "batch_wait_timeout_s": 0.01},
    }
    schema = loopback_serve_config(
        model_dir, HTTP_PORT, GRPC_PORT, {MEMBER: member}, chunk_slices=CHUNK
    )
    with serving(schema):
        yield Path(model_dir)


def _ct(slices: int):
    """A CT phantom of ``slices`` 64² slices (one 12-slice phantom repeated)."""
    from organseg.io.volume import Geometry, Modality, Volume
    from organseg.synth import make_phantom

    image, _, spacing = make_phantom("CT", size=64, slices=12, seed=1)
    array = np.concatenate([image] * -(-slices // len(image)))[:slices]
    return Volume(array, Geometry(spacing=spacing), Modality.CT, {"Modality": "CT"})


def _member_stats() -> dict[str, int]:
    from ray import serve

    return serve.get_deployment_handle(MEMBER, APP).stats.remote().result(timeout_s=30)


def _replicas() -> tuple[int, int]:
    """(running replicas of the member, replicas the controller wants)."""
    from ray import serve

    status = serve.status().applications[APP].deployments[MEMBER]
    running = int(status.replica_states.get("RUNNING", 0))
    return running, running + int(status.replica_states.get("STARTING", 0))


# -- request deadlines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_deadline_cancels_the_work_it_started_members_included(app, protocol: str) -> None:
    """A 640-slice volume is 20 forward passes of the member (~10 s on one core); its client gives up
    after 2.5 s. The member's call is cancelled with it: nothing of it is in flight a few seconds
    later, most passes never ran, and the next request is answered."""
    slices, deadline_s = 640, 2.5
    passes = -(-slices // (CHUNK * BATCH))
    small = _ct(12)
    clients = {"grpc": GrpcClient(GRPC), "http": HttpClient(HTTP)}
    clients[protocol].segment(small)  # warm: the member's first pass is done
    before = _member_stats()
    assert before["in_flight"] == 0

    impatient = (GrpcClient if protocol == "grpc" else HttpClient)(
        GRPC if protocol == "grpc" else HTTP, timeout=deadline_s, retry=NO_RETRY
    )
    outcome: list[BaseException] = []
    started = time.monotonic()

    def send() -> None:
        try:
            impatient.segment(_ct(slices))
        except ServiceError as exc:
            outcome.append(exc)
        finally:
            if protocol == "http":
                impatient.http.close()  # a client that gave up hangs up

    sender = threading.Thread(target=send)
    sender.start()
    busy = []  # (seconds since the request was sent, member stats)
    while sender.is_alive() or not busy or busy[-1][1]["in_flight"]:
        busy.append((time.monotonic() - started, _member_stats()))
        assert busy[-1][0] < 30, busy[-1]  # the member would still be busy without cancellation
        time.sleep(0.2)
    sender.join()
    stopped_s = busy[-1][0]
    time.sleep(1.0)  # a pass that was running when the call was cancelled finishes
    after = _member_stats()
    time.sleep(1.0)
    later = _member_stats()

    assert outcome, "the request should have run out of time"
    expected = "DEADLINE_EXCEEDED" if protocol == "grpc" else "timed out"
    assert expected in str(outcome[0])
    assert max(stats["in_flight"] for _, stats in busy) == 1  # the member did start on it
    ran = after["forward_passes"] - before["forward_passes"]
    # the member stopped a few seconds after the deadline, after a fraction of the passes
    assert stopped_s < deadline_s + 4, busy
    assert ran < passes / 2, (ran, passes)
    assert later["forward_passes"] == after["forward_passes"]  # nothing of it runs any more
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["in_flight"] == 0
    print(f"{protocol}: member idle {stopped_s:.1f} s after sending, {ran} of {passes} passes ran")
    # and the service answers the next request on both protocols
    for client in (GrpcClient(GRPC, retry=NO_RETRY), HttpClient(HTTP, retry=NO_RETRY)):
        assert client.segment(small).labels.shape == small.shape


# -- autoscaling ----------------------------------------------------------------------------------------
def test_a_burst_scales_the_member_up_and_back_down(app) -> None:
    """Six clients send back to back until the member runs two replicas, then stop; within seconds
    it is back to one. No request fails (the clients do not retry)."""
    volume = _ct(12)
    assert _replicas() == (1, 1)
    stop, failures, answered = threading.Event(), [], []

    def client(i: int) -> None:
        c = GrpcClient(GRPC, retry=NO_RETRY) if i % 2 else HttpClient(HTTP, retry=NO_RETRY)
        while not stop.is_set():
            try:
                c.segment(volume)
                answered.append(i)
            except Exception as exc:  # counted: the test asserts there are none
                failures.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        wanted = running = 1
        while running < 2 and time.monotonic() - started < 45:
            running, target = _replicas()
            wanted = max(wanted, target)
            time.sleep(0.25)
        scaled_up_s = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert running == 2, f"the member never ran 2 replicas (wanted {wanted}) in {scaled_up_s:.0f} s"
    burst_end = time.monotonic()
    while _replicas() != (1, 1) and time.monotonic() - burst_end < 30:
        time.sleep(0.25)
    scaled_down_s = time.monotonic() - burst_end
    assert _replicas() == (1, 1), f"still {_replicas()} replicas {scaled_down_s:.0f} s after"
    assert not failures, failures[:3]
    assert len(answered) >= 6
    print(f"scaled up after {scaled_up_s:.1f} s, down {scaled_down_s:.1f} s after the burst")
