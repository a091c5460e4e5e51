"""Soak: the tiny model served on loopback for N minutes of mixed traffic, faults and a live switch.

For ``--minutes`` minutes, at a steady rate, good CT and MR-T2SPIR requests (DICOM zips and raw voxels,
over HTTP and gRPC, through the project's clients and their retries) mix with a share of bad inputs
(every malformed class the service must refuse with a 4xx), a few slow senders that stall mid-body,
and, every ``--event-every-s``, one fault in turn: a member replica, the ensemble replica and the
router replica SIGKILLed, and a live switch to a copy of the model directory (and back). Every
replica's private memory (RssAnon, not the RSS that shared object-store pages inflate) and open file
descriptors are sampled throughout. Members carry freshly initialised weights (seeded): the graph, the
wire and the pixels are real, the masks are not; every good answer is compared with the in-process
ensemble's answer for the same series.

The last line printed is one JSON object: good requests sent / answered / failed and answers that
differ from in-process, bad requests and how many got a 5xx (ours, with a request id, or the Serve
proxy's plain one during a router kill), slow senders, p50/p99 latency, each fault with the seconds until
its replica was replaced and until a request sent after it was answered, memory and descriptor growth
from the first to the last window (ten minutes; a fifth of runs shorter than 50 minutes), and the
private upload folders left by processes that are gone. Everything binds to 127.0.0.1.

    python benchmarks/soak_bench.py --minutes 3      # the short version (about 4 minutes in all)
    python benchmarks/soak_bench.py --minutes 60     # the hour the docs report
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

APP = "organseg"
MEMBERS = {
    "dualtail": {"arch": "dualtail", "in_channels": 1, "kwargs": {"base_channels": 8, "depth": 4}},
    "attention-unet": {
        "arch": "attention_unet",
        "in_channels": 1,
        "kwargs": {"base_channels": 8, "depth": 4},
    },
}
BODY_TIMEOUT_S = 5.0


# -- the model, the series and the Serve config ------------------------------------------------------
def make_model_dir(root: Path) -> Path:
    """Two untrained members serving CT and MR-T2SPIR (task 1, liver), 64² slices."""
    from organseg.config import parse_config
    from organseg.ensemble.spec import write_untrained_model_dir

    config = parse_config(
        {
            "name": "soak",
            "task": 1,
            "dataset": {"synthetic": {"ct": 1, "mr": 1}},
            "preprocess": {"size": 64},
            "members": [
                {"name": n, **m, "modalities": ["CT", "MR-T2SPIR"]} for n, m in MEMBERS.items()
            ],
        }
    )
    return write_untrained_model_dir(config, root / "model", seed=3)


def switched_copy(model_dir: Path, root: Path) -> Path:
    """The same weights under a new model version (what a live switch deploys)."""
    import yaml

    new_dir = root / "model-v2"
    shutil.copytree(model_dir, new_dir)
    spec = yaml.safe_load((new_dir / "ensemble.yaml").read_text())
    spec["created"] = "2030-01-01T00:00:00+00:00"
    (new_dir / "ensemble.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return new_dir


def serve_config(model_dir: Path, ports: tuple[int, int]) -> dict:
    from organseg.serve.runner import serve_schema

    small = {"ray_actor_options": {"num_cpus": 0.1}, "health_check_period_s": 2}
    batching = {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}
    deployments = [
        {"name": "router", **small},
        {"name": "ensemble-CT", **small},
        {"name": "ensemble-MR-T2SPIR", **small},
        *({"name": f"member-{n}", **small, "user_config": batching} for n in MEMBERS),
    ]
    return serve_schema(model_dir, deployments, http_port=ports[0], grpc_port=ports[1],
                        host="127.0.0.1", max_voxels=30_000_000, max_request_mb=64,
                        body_timeout_s=BODY_TIMEOUT_S, retry_budget_s=60.0)  # fmt: skip


@dataclass
class Series:
    name: str  # CT | MR-T2SPIR
    folder: Path
    volume: Any
    expected: np.ndarray


def make_series(root: Path, model_dir: Path) -> list[Series]:
    """One synthetic CT and one T2-SPIR DICOM series, each with the in-process ensemble's labels."""
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io import discover_cases, load_case
    from organseg.io.volume import Modality
    from organseg.synth import write_dataset

    write_dataset(root / "chaos", ct=1, mr=1, size=64, slices=12, seed=11)
    refs = [
        next(r for r in discover_cases(root / "chaos") if r.modality is modality)
        for modality in (Modality.CT, Modality.MR_T2SPIR)
    ]
    volumes = [load_case(ref, with_label=False).image for ref in refs]
    # untrained members answer about the same probability everywhere, so these masks are uniform:
    # they check the graph, the wire, the geometry and the routing, not the pixels' values
    local = EnsemblePredictor(model_dir)
    labels = [local.predict(v, v.modality).labels.array for v in volumes]
    return [
        Series(v.modality.value, ref.image_dir, v, a)
        for ref, v, a in zip(refs, volumes, labels, strict=True)
    ]


# -- replicas, memory and descriptors -----------------------------------------------------------------
def replica_pids() -> dict[str, list[int]]:
    """Live Serve processes by deployment (plus the proxy and the controller), from their titles;
    only this run's (the local cluster's processes descend from this one)."""
    import psutil

    found: dict[str, list[int]] = defaultdict(list)
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if f"ServeReplica:{APP}:" in title:
            name = title.split(f"ServeReplica:{APP}:", 1)[1].split()[0].split(".")[0]
            found[name].append(proc.pid)
        elif title.startswith(("ray::ProxyActor", "ray::ServeController")):
            found[title.split("::", 1)[1].split()[0].split(".")[0]].append(proc.pid)
    return dict(found)


def private_mib_and_fds(pid: int) -> tuple[float, int] | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        return int(fields["RssAnon"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, KeyError, ValueError):
        return None


def orphaned_upload_folders() -> int:
    """Private upload folders whose process is gone (the routers' sweep should leave none)."""
    from organseg.serve.ops import tempdirs

    root = Path(tempfile.gettempdir())
    left = 0
    for folder in root.glob(f"{tempdirs.PREFIX}*"):
        suffix = folder.name[len(tempdirs.PREFIX) :]
        if suffix.isdigit() and not tempdirs._alive(int(suffix), folder):
            left += 1
    return left


# -- traffic -------------------------------------------------------------------------------------------
@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    good: list[tuple[float, float, bool, bool]] = field(default_factory=list)  # start, s, ok, same
    good_errors: Counter = field(default_factory=Counter)
    bad: list[tuple[float, str, str]] = field(default_factory=list)  # start, case, status
    slow: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)


def good_request(kind: tuple[str, str, Series], clients: dict[str, Any]) -> tuple[np.ndarray, str]:
    transport, form, series = kind
    client = clients[transport]
    if form == "dicom":
        prediction = client.segment_dicom([series.folder])
    else:
        prediction = client.segment(series.volume, series.name)
    return prediction.labels.array, prediction.model_version


def bad_cases(series: list[Series]) -> list[tuple[str, str, Any]]:
    """(name, transport, request): each class a client may get wrong, malformed forms included."""
    from organseg.serve.client import zip_dicom_series
    from organseg.serve.proto import segmentation_pb2 as pb

    ct_zip = zip_dicom_series(series[0].folder)
    raw = np.zeros((4, 8, 8), np.int16).tobytes()
    nan = np.zeros((4, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    upload = 'name="file"; filename="s.zip"'

    def form(parts: list[tuple[str, bytes]]) -> bytes:
        body = b"".join(
            f"--bnd\r\nContent-Disposition: form-data; {d}\r\n\r\n".encode() + data + b"\r\n"
            for d, data in parts
        )
        return body + b"--bnd--\r\n"

    raw_fields = {"dtype": "int16", "modality": "CT"}
    http = [
        ("garbage after the boundary", b"--bnd\r\n\x00\xffgarbage"),
        ("part without a name", form([('filename="s.zip"', ct_zip)])),
        ("21 form fields", form([(f'name="f{k}"', b"x") for k in range(21)])),
        ("2 MiB modality field", form([(upload, ct_zip), ('name="modality"', b"C" * (2 << 20))])),
        ("two file parts", form([(upload, ct_zip), ('name="file"; filename="b"', ct_zip)])),
        ("no file field", form([('name="modality"', b"CT")])),
        ("not a volume", form([('name="file"; filename="notes.txt"', b"hello")])),
        ("not a zip", form([('name="file"; filename="s.zip"', b"PK\x03\x04garbage")])),
        ("truncated zip", form([(upload, ct_zip[: len(ct_zip) // 2])])),
    ]
    cases: list[tuple[str, str, Any]] = [(n, "http-body", body) for n, body in http]
    cases += [
        ("shape 1e30", "http-form", ({"shape": "1e30,1,1", **raw_fields}, raw)),
        ("shape inf", "http-form", ({"shape": "inf,8,8", **raw_fields}, raw)),
        ("wrong byte count", "http-form", ({"shape": "4,8,8", **raw_fields}, raw[:-2])),
        ("NaN voxels", "http-form", ({"shape": "4,8,8", "dtype": "float32", "modality": "CT"},
                                     nan.tobytes())),
        ("unserved modality", "http-form", ({"shape": "4,8,8", "dtype": "int16",
                                             "modality": "MR-T1-out"}, raw)),
        ("unknown modality", "http-form", ({"shape": "4,8,8", "dtype": "int16", "modality": "PET"},
                                           raw)),
        ("grpc empty", "grpc", pb.SegmentRequest()),
        ("grpc not a zip", "grpc", pb.SegmentRequest(dicom_zip=b"nope")),
        ("grpc bad dtype", "grpc", pb.SegmentRequest(
            raw=pb.RawVolume(data=raw, dtype="complex64", shape=[4, 8, 8]), modality="CT")),
        ("grpc overflowing shape", "grpc", pb.SegmentRequest(
            raw=pb.RawVolume(data=raw, dtype="int16", shape=[2**62, 2**62, 4]), modality="CT")),
    ]  # fmt: skip
    return cases


def send_bad(case: tuple[str, str, Any], http: str, grpc_client: Any) -> str:
    """The status a bad request got: an HTTP code, a gRPC code name, or the transport error."""
    import httpx

    from organseg.serve.client import ServiceError

    _name, kind, request = case
    try:
        if kind == "http-body":
            headers = {"content-type": "multipart/form-data; boundary=bnd"}
            response = httpx.post(
                f"{http}/v1/segment", content=request, headers=headers, timeout=60
            )
        elif kind == "http-form":
            fields, data = request
            response = httpx.post(
                f"{http}/v1/segment", files={"file": ("v.raw", data)}, data=fields, timeout=60
            )
        else:
            try:
                grpc_client.call("Segment", request)
                return "OK"
            except ServiceError as exc:  # "<target> answered CODE: details [request_id=...]"
                code = re.search(r"answered (\w+)", str(exc))
                ours = "[request_id=" in str(exc)
                return f"{code.group(1) if code else 'error'}{'' if ours else ' (proxy)'}"
        ours = "request_id" in response.text
        return f"{response.status_code}{'' if ours else ' (proxy)'}"
    except Exception as exc:  # a dropped connection during a router kill, counted by its type
        return type(exc).__name__


def slow_sender(http_port: int, tally: Tally) -> None:
    """Sends headers and the start of a body, then stalls: the router must answer 408 itself."""
    with socket.create_connection(("127.0.0.1", http_port), timeout=60) as sock:
        head = (
            "POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=bnd\r\n\r\n"
        )
        sock.sendall(head.encode() + b'--bnd\r\nContent-Disposition: form-data; name="file"')
        try:
            answer = sock.recv(200).decode("latin-1")
            status = answer.split(" ", 2)[1] if answer.startswith("HTTP/") else "closed"
        except OSError as exc:
            status = type(exc).__name__
    with tally.lock:
        tally.slow.append(status)


# -- the run ---------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def window_growth(samples: list[tuple[float, str, float, int]], start: float, end: float, w: float):
    """Per deployment: median private MiB and descriptors in the first and the last window."""
    out: dict[str, Any] = {}
    for name in sorted({s[1] for s in samples}):
        mine = [s for s in samples if s[1] == name]
        first = [s for s in mine if s[0] < start + w]
        last = [s for s in mine if s[0] >= end - w]
        if not first or not last:
            continue
        m0, m1 = (statistics.median(s[2] for s in x) for x in (first, last))
        f0, f1 = (statistics.median(s[3] for s in x) for x in (first, last))
        out[name] = {
            "memory_mib_first": round(m0, 1),
            "memory_mib_last": round(m1, 1),
            "memory_growth_pct": round(100 * (m1 - m0) / m0, 1) if m0 else None,
            "fds_first": f0,
            "fds_last": f1,
            "fd_growth": f1 - f0,
        }
    return out


def run(options: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    from organseg.serve.client import GrpcClient, HttpClient
    from organseg.serve.runner import deploy, load_serve_config

    ports = (options.http_port, options.grpc_port)
    http, target = f"http://127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    seconds = options.minutes * 60
    window = 600.0 if options.minutes >= 50 else seconds / 5
    event_every = options.event_every_s or (180.0 if options.minutes >= 30 else seconds / 5)
    tmp = Path(tempfile.mkdtemp(prefix="organseg-soak-"))
    tally = Tally()
    events: list[dict[str, Any]] = []
    samples: list[tuple[float, str, float, int]] = []
    try:
        model_dirs = [make_model_dir(tmp)]
        series = make_series(tmp, model_dirs[0])
        model_dirs.append(switched_copy(model_dirs[0], tmp))
        print("series:", [(x.name, round(float(np.mean(x.expected > 0)), 3)) for x in series])
        # a cluster of its own (address="local"), never one this machine already runs
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        deploy(load_serve_config(serve_config(model_dirs[0], ports)), timeout_s=300)
        clients = {"http": HttpClient(http, timeout=120), "grpc": GrpcClient(target, timeout=120)}
        kinds = [(t, f, s) for s in series for t in ("http", "grpc") for f in ("dicom", "raw")]
        for kind in kinds:  # warm-up: every path once, and each answer checked before the clock
            labels, _ = good_request(kind, clients)
            if not np.array_equal(labels, kind[2].expected):
                print(f"warm-up: {kind[0]} {kind[1]} {kind[2].name} differs from in-process")
        bad = bad_cases(series)
        from organseg.serve.client import NO_RETRY

        bare_grpc = GrpcClient(target, timeout=60, retry=NO_RETRY)

        stop = threading.Event()
        t0 = time.monotonic()
        end = t0 + seconds

        def good_one(kind: tuple[str, str, Series], started: float) -> None:
            try:
                labels, version = good_request(kind, clients)
                ok, same = True, bool(np.array_equal(labels, kind[2].expected))
            except Exception as exc:  # counted: the goal is none
                ok, same, version = False, False, None
                with tally.lock:
                    tally.good_errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            with tally.lock:
                tally.good.append((started - t0, time.monotonic() - started, ok, same))
                if version:
                    tally.versions[version] += 1

        def sampler() -> None:
            while not stop.is_set():
                now = time.monotonic() - t0
                for name, pids in replica_pids().items():
                    figures = [f for f in map(private_mib_and_fds, pids) if f]
                    if figures:
                        mib = sum(f[0] for f in figures)
                        fds = sum(f[1] for f in figures)
                        samples.append((now, name, mib, fds))
                stop.wait(options.sample_every_s)

        def chaos() -> None:
            order = ["member-dualtail", "ensemble-CT", "router", "switch"]
            k = switches = 0
            # on a fixed schedule from the start: the time a fault takes does not push the next
            while not stop.wait(max(0.0, t0 + (k + 1) * event_every - time.monotonic())):
                if time.monotonic() >= end - 10:
                    break
                what = order[k % len(order)]
                k += 1
                at = time.monotonic()
                entry: dict[str, Any] = {"event": what, "at_s": round(at - t0, 1)}
                if what == "switch":
                    switches += 1
                    new = model_dirs[switches % 2]  # to the copy, then back
                    try:
                        deploy(load_serve_config(serve_config(new, ports)), timeout_s=120)
                        entry["switched_after_s"] = round(time.monotonic() - at, 2)
                    except Exception as exc:
                        entry["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                else:
                    (pid, *_) = replica_pids().get(what, [None])
                    if pid is None:
                        entry["error"] = "no replica found"
                    else:
                        os.kill(pid, signal.SIGKILL)
                        while time.monotonic() < at + 120 and not stop.is_set():
                            alive = replica_pids().get(what, [])
                            if alive and pid not in alive:
                                entry["replaced_after_s"] = round(time.monotonic() - at, 2)
                                break
                            time.sleep(0.2)
                events.append(entry)

        def slow_senders() -> None:
            while not stop.wait(min(60.0, max(10.0, event_every))) and time.monotonic() < end - 30:
                threads = [
                    threading.Thread(target=slow_sender, args=(ports[0], tally), daemon=True)
                    for _ in range(3)
                ]
                for t in threads:
                    t.start()

        helpers = [threading.Thread(target=f, daemon=True) for f in (sampler, chaos, slow_senders)]
        for t in helpers:
            t.start()
        pool = concurrent.futures.ThreadPoolExecutor(options.max_in_flight)
        in_flight: set[concurrent.futures.Future] = set()
        skipped, tick, k, ticks = 0, 1.0 / options.rate, 0, 0
        next_at = t0
        while time.monotonic() < end:
            in_flight = {f for f in in_flight if not f.done()}
            if len(in_flight) >= options.max_in_flight:
                skipped += 1  # the service is behind: the steady rate holds, nothing piles up
            else:
                in_flight.add(pool.submit(good_one, kinds[k % len(kinds)], time.monotonic()))
                k += 1
            ticks += 1
            if ticks % options.bad_every == 0:
                case = bad[(ticks // options.bad_every) % len(bad)]
                started = time.monotonic() - t0
                status = send_bad(case, http, bare_grpc)
                with tally.lock:
                    tally.bad.append((started, case[0], status))
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))
        stop.set()
        pool.shutdown(wait=True)
        for t in helpers:
            t.join(timeout=150)
        time.sleep(options.sample_every_s)
        finished = time.monotonic() - t0
        left_folders = orphaned_upload_folders()
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    good = tally.good
    latencies = [s for _, s, ok, _ in good if ok]
    for entry in events:  # recovered: the first request sent after the event is answered
        after = [(start + s) for start, s, ok, _ in good if ok and start >= entry["at_s"]]
        entry["recovered_after_s"] = round(min(after) - entry["at_s"], 2) if after else None
    bad_status = Counter(status for _, _, status in tally.bad)
    five_xx = [
        (t, n, s)
        for t, n, s in tally.bad
        if s.startswith("5") or s.split()[0] in ("INTERNAL", "UNKNOWN")
    ]

    def near_kill(t: float) -> bool:
        return any(e["event"] != "switch" and 0 <= t - e["at_s"] <= 30 for e in events)

    return {
        "minutes": options.minutes,
        "ran_s": round(finished, 1),
        "rate_per_s": options.rate,
        "good": {
            "sent": len(good),
            "answered": sum(ok for _, _, ok, _ in good),
            "failed": sum(not ok for _, _, ok, _ in good),
            "differing": sum(ok and not same for _, _, ok, same in good),
            "not_sent_service_behind": skipped,
            "errors": dict(tally.good_errors.most_common(5)),
            "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99),
            "model_versions": len(tally.versions),
        },
        "bad": {
            "sent": len(tally.bad),
            "five_xx": len(five_xx),
            "five_xx_ours": sum("proxy" not in s for _, _, s in five_xx),  # with our request id
            "five_xx_within_30s_of_a_kill": sum(near_kill(t) for t, _, _ in five_xx),
            "five_xx_cases": sorted({n for _, n, _ in five_xx}),
            "statuses": dict(bad_status),
        },
        "slow_senders": dict(Counter(tally.slow)),
        "events": events,
        "replicas_killed": sum(e["event"] != "switch" for e in events),
        "window_s": window,
        "growth": window_growth(samples, 0.0, finished, window),
        "orphaned_upload_folders": left_folders,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=1.0, help="good requests per second")
    parser.add_argument("--bad-every", type=int, default=4, help="one bad request per N good ones")
    parser.add_argument("--max-in-flight", type=int, default=6)
    parser.add_argument("--event-every-s", type=float, default=None,
                        help="seconds between faults (default: 180 s; a fifth of short runs)")  # fmt: skip
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--http-port", type=int, default=18811)
    parser.add_argument("--grpc-port", type=int, default=19811)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args()
    # stopped by a time limit (SIGTERM): still shut Serve and the local Ray cluster down
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    figures = run(options)
    good, bad = figures["good"], figures["bad"]
    print(
        f"{options.minutes:g} min: good {good['answered']}/{good['sent']} answered, "
        f"{good['failed']} failed, {good['differing']} differ from in-process; p50 "
        f"{good['p50_s']} s, p99 {good['p99_s']} s; bad {bad['sent']}, {bad['five_xx']} got a 5xx "
        f"({bad['five_xx_within_30s_of_a_kill']} within 30 s of a kill); "
        f"{figures['replicas_killed']} replicas killed"
    )
    for entry in figures["events"]:
        print("  event:", entry)
    for name, growth in figures["growth"].items():
        print(f"  {name}: {growth}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
