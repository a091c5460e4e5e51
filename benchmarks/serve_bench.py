"""Serving data plane: in-process ensemble vs the Serve graph over HTTP and gRPC, and what batching buys.

One run measures, on the same volume and the same models:
  1. the in-process ensemble (``EnsemblePredictor``: preprocess, members, average, threshold, components);
  2. for each deployment mode — ``separate`` (one deployment per member, volume passed by object-store
     reference, uint8 maps back) and ``colocated`` (members inside the ensemble replica) — the latency
     of one volume over HTTP and over gRPC (overhead = served / in-process), and throughput with 1, 4
     and 16 concurrent clients, with ``@serve.batch`` on and off (max_batch_size 1);
  3. with separate member deployments: latency percentiles (p50/p90/p95/p99) under a sustained, bounded load
     (``--load-clients`` clients for ``--load-s`` seconds), and the recovery after one member replica is
     killed under that load: requests failed (the clients retry, so this should be 0), the slowest
     request, and the seconds from the kill until requests are back under 2× the steady p50;
  4. autoscaling: a member deployment autoscaled between 1 and 2 replicas gets a burst; the replica count
     is sampled during and after it (scaled up, then back down once the burst is over).
Members carry freshly initialised weights: the architectures and pixels are real, the masks are not.
The last line printed is one JSON object with every figure. ``--jsonl FILE`` also writes each phase's
figures as one JSON line the moment they exist (stdout too), so a time limit costs only the phases it
cuts; ``--phases`` picks the phases (the GPU suite runs ``inprocess,serve``).

    python benchmarks/serve_bench.py                       # CPU-sized default (128², 2 small members)
    python benchmarks/serve_bench.py --gpu                 # 512², the four CT members, GPU fractions
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

GPU_MEMBERS = {
    "ternausnet": {"arch": "ternausnet", "in_channels": 3},
    "linknet34": {"arch": "linknet34", "in_channels": 3},
    "unet-resnet50": {"arch": "unet_resnet50", "in_channels": 3},
    "unet-se-resnet50": {"arch": "unet_se_resnet50", "in_channels": 3},
}
CPU_MEMBERS = {
    "dualtail": {"arch": "dualtail", "in_channels": 1, "kwargs": {"base_channels": 8, "depth": 4}},
    "attention-unet": {
        "arch": "attention_unet",
        "in_channels": 1,
        "kwargs": {"base_channels": 8, "depth": 4},
    },
}


def make_volume(slices: int, size: int):
    """A CT phantom at ``size``² (synthesized at 128² and upsampled: realistic anatomy, cheap to make)."""
    from organseg.io.volume import Geometry, Modality, Volume
    from organseg.synth import make_phantom

    image, _, spacing = make_phantom("CT", size=128, slices=slices, seed=1)
    factor = max(1, size // 128)
    array = np.repeat(np.repeat(image, factor, axis=1), factor, axis=2)
    geometry = Geometry(spacing=(spacing[0] / factor, spacing[1] / factor, spacing[2]))
    return Volume(array, geometry, Modality.CT, {"Modality": "CT"})


def make_model_dir(members: dict[str, dict], size: int, root: Path) -> Path:
    from organseg.config import parse_config
    from organseg.ensemble.spec import write_untrained_model_dir

    config = parse_config(
        {
            "name": "serve-bench",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": size},
            "members": [{"name": n, **m} for n, m in members.items()],
        }
    )
    return write_untrained_model_dir(config, root / "model")


PHASES = ("inprocess", "serve", "load", "autoscale")


class Emitter:
    """One JSON line per finished phase, on stdout and appended (flushed) to ``path``."""

    def __init__(self, path: Path | None, context: dict[str, Any]) -> None:
        self.path, self.context = path, context

    def __call__(self, phase: str, figures: dict[str, Any]) -> None:
        line = json.dumps({"bench": "serve", "phase": phase, **self.context, **figures})
        print(line, flush=True)
        if self.path is not None:
            with self.path.open("a") as stream:
                stream.write(line + "\n")


def postprocess_share(timings: list[dict[str, float]]) -> float | None:
    """Median share of a volume's time spent in post-processing (None if the stages do not say)."""
    # in-process stages end with "total"; the server's with "ensemble_total" (the router's adds transport)
    totals = [(t, t.get("total") or t.get("ensemble_total")) for t in timings]
    shares = [t["postprocess"] / total for t, total in totals if total and "postprocess" in t]
    return statistics.median(shares) if shares else None


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def throughput(send, clients: int, requests_per_client: int, slices: int) -> float:
    """Slices per second with ``clients`` threads each sending ``requests_per_client`` volumes."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(requests_per_client):
                send()
        except BaseException as exc:  # surface after the run
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return clients * requests_per_client * slices / (time.perf_counter() - started)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def sustained_load(
    send, clients: int, seconds: float, on_start=None
) -> list[tuple[float, float, bool]]:
    """``clients`` threads sending back to back for ``seconds``: ``(start, end, ok)`` per request.

    ``on_start(t0)`` runs in its own thread once the load is on (used to kill a replica mid-run).
    """
    records: list[tuple[float, float, bool]] = []
    lock = threading.Lock()
    t0 = time.perf_counter()
    stop_at = t0 + seconds

    def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                send()
                ok = True
            except Exception:
                ok = False
            with lock:
                records.append((started - t0, time.perf_counter() - t0, ok))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    if on_start is not None:
        threads.append(threading.Thread(target=on_start, args=(t0,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def kill_one_replica(deployment: str, app: str = "organseg") -> None:
    """Kill one replica actor of ``deployment`` outright (as a crash would; Serve starts a new one)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith("SERVE_REPLICA::") and f"{app}#{deployment}#" in name:
            ray.kill(ray.get_actor(name, namespace=actor["namespace"]), no_restart=True)
            return
    raise RuntimeError(f"no replica of {deployment} found")


def load_and_recovery(client, volume, clients: int, seconds: float, member: str) -> dict[str, Any]:
    """Percentiles under steady load, then the same load with one member replica killed at 1/3."""
    send = lambda: client.segment(volume)  # noqa: E731
    steady = sustained_load(send, clients, seconds)
    latencies = [end - start for start, end, ok in steady if ok]
    p50 = percentile(latencies, 50)
    out: dict[str, Any] = {
        "load_clients": clients,
        "load_seconds": seconds,
        "requests": len(steady),
        "failed": sum(not ok for *_, ok in steady),
        "p50_s": p50,
        "p90_s": percentile(latencies, 90),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies, default=float("nan")),
    }
    kill_at: list[float] = []

    def kill(t0: float) -> None:
        time.sleep(seconds / 3)
        kill_at.append(time.perf_counter() - t0)
        kill_one_replica(f"member-{member}")

    faulty = sustained_load(send, clients, seconds, on_start=kill)
    killed = kill_at[0]
    after = sorted((end, end - start) for start, end, ok in faulty if ok and end > killed)
    # recovered: from the kill until requests finish under 2× the steady p50 again (and stay there)
    recovered = next(
        (end for i, (end, _) in enumerate(after) if all(lat <= 2 * p50 for _, lat in after[i:])),
        float("nan"),
    )
    out["kill"] = {
        "member": member,
        "requests": len(faulty),
        "failed": sum(not ok for *_, ok in faulty),
        "slowest_s": max((end - start for start, end, ok in faulty if ok), default=float("nan")),
        "recovery_s": recovered - killed,
    }
    return out


def replica_count(deployment: str, app: str = "organseg") -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def autoscaling_run(client, volume, member: str, clients: int, burst_s: float) -> dict[str, Any]:
    """Burst ``clients`` for ``burst_s``, then idle; sample ``member``'s running replicas throughout."""
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, replica_count(f"member-{member}")))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    burst = sustained_load(lambda: client.segment(volume), clients, burst_s)
    burst_end = time.perf_counter() - t0
    deadline = time.perf_counter() + 90
    while time.perf_counter() < deadline and replica_count(f"member-{member}") > 1:
        time.sleep(0.5)
    time.sleep(1)
    stop.set()
    sampler.join()
    peak = max(n for _, n in samples)
    up = next((t for t, n in samples if n > 1), float("nan"))
    down = next((t for t, n in samples if t > burst_end and n == 1), float("nan"))
    return {
        "member": member,
        "burst_clients": clients,
        "burst_s": burst_s,
        "burst_failed": sum(not ok for *_, ok in burst),
        "peak_replicas": peak,
        "scaled_up_after_s": up,
        "back_to_one_after_burst_s": down - burst_end,
    }


def serve_config(
    model_dir: Path,
    members: list[str],
    mode: str,
    gpu: bool,
    batch: int,
    ports: tuple[int, int],
    precision: str | None = None,
    compile_members: bool = False,
    autoscale: str | None = None,
) -> dict:
    colocated = mode == "colocated"
    deployments: list[dict[str, Any]] = [{"name": "router", "num_replicas": 2 if gpu else 1,
                                          "ray_actor_options": {"num_cpus": 1 if gpu else 0.1}}]  # fmt: skip
    ensemble = {"name": "ensemble-CT", "num_replicas": 4 if gpu else 1, "max_ongoing_requests": 8,
                "ray_actor_options": {"num_cpus": 2 if gpu else 0.2}}  # fmt: skip
    if colocated and gpu:
        ensemble["ray_actor_options"]["num_gpus"] = 0.24
    deployments.append(ensemble)
    if not colocated:
        for name in members:
            options = {"num_cpus": 1 if gpu else 0.3, **({"num_gpus": 0.2} if gpu else {})}
            deployments.append({"name": f"member-{name}", "max_ongoing_requests": 64, "ray_actor_options": options,
                                "user_config": {"max_batch_size": batch, "batch_wait_timeout_s": 0.01}})  # fmt: skip
            if name == autoscale:  # quick to react, so that one run shows both directions
                deployments[-1].update(max_ongoing_requests=4, autoscaling_config={
                    "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                    "upscale_delay_s": 1, "downscale_delay_s": 5, "metrics_interval_s": 0.5,
                    "look_back_period_s": 2})  # fmt: skip
    from organseg.serve.runner import serve_schema

    return serve_schema(model_dir, deployments, http_port=ports[0], grpc_port=ports[1],
                        colocate_members=colocated, chunk_slices=8, member_precision=precision,
                        compile_members=compile_members)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpu", action="store_true", help="512², the four CT members, fractional GPUs"
    )
    parser.add_argument(
        "--size", type=int, help="in-plane size (default 128 on CPU, 512 with --gpu)"
    )
    parser.add_argument(
        "--slices", type=int, default=None, help="slices per volume (default 32 CPU / 96 GPU)"
    )
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per client (default 2 CPU / 4 GPU)"
    )
    parser.add_argument("--modes", default="separate,colocated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--jsonl", type=Path, help="append each phase's figures here as it ends")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}"
    )
    parser.add_argument("--ports", default="18901,19901")
    parser.add_argument(
        "--precision", default=None, help="members: fp16 | bf16 | fp32 (default by device)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the members (warmed up)"
    )
    parser.add_argument(
        "--no-unbatched", dest="unbatched", action="store_false", help="skip max_batch_size 1"
    )
    parser.add_argument("--load-clients", type=int, default=4, help="clients of the sustained load")
    parser.add_argument("--load-s", type=float, default=20.0, help="seconds of sustained load")
    parser.add_argument(
        "--no-load", dest="load", action="store_false", help="skip the load/recovery section"
    )
    parser.add_argument(
        "--no-autoscale", dest="autoscale", action="store_false", help="skip the autoscaling burst"
    )
    options = parser.parse_args()
    phases = set(options.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"--phases: unknown {', '.join(sorted(phases - set(PHASES)))}")
    options.load = options.load and "load" in phases
    options.autoscale = options.autoscale and "autoscale" in phases

    import ray
    from ray import serve

    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.serve.client import GrpcClient, HttpClient
    from organseg.serve.runner import deploy, load_serve_config

    gpu = options.gpu
    size = options.size or (512 if gpu else 128)
    slices = options.slices or (96 if gpu else 32)
    requests = options.requests or (4 if gpu else 2)
    members = GPU_MEMBERS if gpu else CPU_MEMBERS
    clients = [int(c) for c in options.clients.split(",")]
    ports = tuple(int(p) for p in options.ports.split(","))
    results: dict[str, Any] = {"size": size, "slices": slices, "members": list(members), "gpu": gpu}
    emit = Emitter(options.jsonl, {**results, "compile": options.compile})

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(members, size, Path(tmp))
        volume = make_volume(slices, size)
        print(
            f"volume {volume.shape} int16, {len(members)} members at {size}², device {'cuda' if gpu else 'cpu'}"
        )

        local = EnsemblePredictor(
            model_dir,
            batch_size=32 if gpu else 16,
            precision=options.precision,
            compile=options.compile,
        )
        started = time.perf_counter()
        warm = local.predict(volume)  # warm-up: weights, kernels, allocator (and the compile)
        warm_s = time.perf_counter() - started
        print("in-process stages (s):", {k: round(v, 3) for k, v in warm.timings.items()})
        local_stages: list[dict[str, float]] = []
        local_s = statistics.median(
            timed(lambda: local_stages.append(dict(local.predict(volume).timings)), options.repeats)
        )
        results["in_process"] = {
            "seconds": local_s,
            "slices_per_s": slices / local_s,
            "first_volume_s": warm_s,
            "postprocess_share": postprocess_share(local_stages),
            "stages_s": {k: statistics.median(t[k] for t in local_stages) for k in local_stages[0]},
        }
        if "inprocess" in phases:
            # threads sharing one predictor (members run one batch at a time each)
            for n in clients:
                rate = throughput(lambda: local.predict(volume), n, requests, slices)
                results["in_process"][f"throughput_{n}_clients"] = rate
                print(f"in-process, {n:2d} client threads: {rate:.1f} slices/s")
        print(f"in-process ensemble: {local_s:.3f} s/volume = {slices / local_s:.1f} slices/s")
        emit("in_process", results["in_process"])
        expected = local.predict(volume).labels.array
        if not phases & {"serve", "load", "autoscale"}:
            print(json.dumps(results))
            return 0

        ray.init(include_dashboard=False, log_to_driver=False)
        # stopped by a time limit (SIGTERM): still shut Serve and the local Ray cluster down, or they
        # keep holding the GPU for whatever runs next
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
        try:
            for mode in options.modes.split(",") if phases & {"serve", "load"} else []:
                for batch in (4, 1) if options.unbatched else (4,):
                    label = f"{mode}, max_batch_size {batch}" if mode == "separate" else mode
                    if mode == "colocated" and batch == 1:
                        continue
                    schema = load_serve_config(
                        serve_config(
                            model_dir,
                            list(members),
                            mode,
                            gpu,
                            batch,
                            ports,
                            options.precision,
                            options.compile,
                        )
                    )
                    deploy(schema)
                    http, grpc_client = (
                        HttpClient(f"http://127.0.0.1:{ports[0]}"),
                        GrpcClient(f"127.0.0.1:{ports[1]}"),
                    )
                    check = http.segment(volume)
                    # bit-identical on CPU; on a GPU, bf16 kernels chosen per batch size may move a few
                    # probabilities across a quantization step, so report the agreement instead of asserting
                    agreement = float(np.mean(check.labels.array == expected))
                    print(
                        f"[{label}] voxels identical to the in-process mask: {100 * agreement:.4f} %"
                    )
                    entry: dict[str, Any] = {"voxel_agreement": agreement}
                    if batch != 1:
                        for name, client in (("http", http), ("grpc", grpc_client)):
                            client.segment(volume)
                            # served and in-process alternate, so load from anything else on the
                            # machine weighs on both alike; the overhead is the median pair's ratio
                            served_s, local_pair_s = [], []
                            for _ in range(options.repeats):
                                served_s += timed(lambda c=client: c.segment(volume), 1)
                                local_pair_s += timed(lambda: local.predict(volume), 1)
                            seconds = statistics.median(served_s)
                            ratio = statistics.median(
                                a / b for a, b in zip(served_s, local_pair_s, strict=True)
                            )
                            entry[f"{name}_latency_s"] = seconds
                            entry[f"{name}_in_process_s"] = statistics.median(local_pair_s)
                            entry[f"{name}_overhead_x"] = ratio
                            stages = client.segment(volume).timings  # where the served time goes
                            entry[f"{name}_stages_s"] = dict(stages)
                            entry[f"{name}_postprocess_share"] = postprocess_share([stages])
                            print(
                                f"[{label}] one volume over {name}: {seconds:.3f} s, in-process "
                                f"{statistics.median(local_pair_s):.3f} s alternating: {ratio:.2f}× "
                                f"in-process; server stages (s): "
                                f"{ {k: round(v, 3) for k, v in stages.items()} }"
                            )
                    for n in clients:
                        rate = throughput(
                            lambda c=grpc_client: c.segment(volume), n, requests, slices
                        )
                        entry[f"throughput_{n}_clients"] = rate
                        print(
                            f"[{label}] {n:2d} clients (gRPC): {rate:.1f} slices/s "
                            f"({rate / (slices / local_s):.2f}× in-process)"
                        )
                    if options.load and mode == "separate" and batch != 1:
                        figures = load_and_recovery(
                            grpc_client,
                            volume,
                            options.load_clients,
                            options.load_s,
                            next(iter(members)),
                        )
                        entry["load"] = figures
                        kill = figures["kill"]
                        print(
                            f"[{label}] {options.load_clients} clients for {options.load_s:.0f} s: "
                            f"p50 {figures['p50_s']:.3f} s, p95 {figures['p95_s']:.3f} s, "
                            f"p99 {figures['p99_s']:.3f} s, {figures['failed']} failed; member replica "
                            f"killed: {kill['failed']} failed, slowest {kill['slowest_s']:.2f} s, "
                            f"recovered in {kill['recovery_s']:.1f} s"
                        )
                    results[label] = entry
                    emit(label, entry)
                    serve.delete("organseg")
            if options.autoscale:
                member = next(iter(members))
                deploy(
                    load_serve_config(
                        serve_config(
                            model_dir,
                            list(members),
                            "separate",
                            gpu,
                            4,
                            ports,
                            options.precision,
                            options.compile,
                            autoscale=member,
                        )
                    )
                )
                scaling = autoscaling_run(
                    GrpcClient(f"127.0.0.1:{ports[1]}"), volume, member, 8, 20.0
                )
                results["autoscaling"] = scaling
                emit("autoscaling", scaling)
                print(
                    f"[autoscaling] member-{member}: 1 → {scaling['peak_replicas']} replicas "
                    f"{scaling['scaled_up_after_s']:.1f} s into a burst of 8 clients, back to 1 "
                    f"{scaling['back_to_one_after_burst_s']:.1f} s after it "
                    f"({scaling['burst_failed']} requests failed)"
                )
                serve.delete("organseg")
        finally:
            serve.shutdown()
            ray.shutdown()

    separate, unbatched = (
        results.get("separate, max_batch_size 4"),
        results.get("separate, max_batch_size 1"),
    )
    if separate and unbatched:
        top = max(clients)
        gain = separate[f"throughput_{top}_clients"] / unbatched[f"throughput_{top}_clients"]
        print(f"@serve.batch at {top} clients: {gain:.2f}× the slices/s of max_batch_size 1")
        results["batching_gain"] = gain
    if "colocated" in results and separate:
        top = max(clients)
        ratio = (
            results["colocated"][f"throughput_{top}_clients"]
            / separate[f"throughput_{top}_clients"]
        )
        print(f"colocated / separate member deployments at {top} clients: {ratio:.2f}×")
        results["colocated_over_separate"] = ratio
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
