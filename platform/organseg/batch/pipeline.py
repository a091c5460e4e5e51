"""The Ray Data glue: discovered series → read (CPU tasks) → predict (actor pool) → write (CPU tasks).

Each stage calls the pure functions of :mod:`organseg.batch.work`; this module only decides where
they run. One series is one block, so a slow or retried series holds up nobody else. Predicting
actors load the ensemble once; Ray restarts a killed actor (``max_restarts``) and retries its task
(``max_task_retries``), and because outputs and done records are written atomically under the
series' key, a retried series replaces its own files instead of adding new ones.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from organseg.batch.work import (
    Carrier,
    Settings,
    make_predictor,
    predict_stage,
    read_stage,
    write_stage,
)
from organseg.errors import OrgansegError

#: A killed or crashed predicting actor is restarted this often, and its batch retried, before the
#: run gives up (a series that kills its actor every time must not loop forever).
MAX_ACTOR_RESTARTS = 4
#: How long the pipeline waits for its minimum predicting actors before giving up.
WAIT_FOR_ACTORS_S = 600


@dataclass(frozen=True)
class PoolSize:
    """Predicting actors: ``min_workers``..``max_workers`` (equal: a fixed pool), and each one's
    share of a GPU and CPUs."""

    min_workers: int = 1
    max_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def strategy(self):
        """The actor pool (``concurrency=`` is deprecated since Ray 2.51: ``compute=`` it is)."""
        from ray.data import ActorPoolStrategy

        if self.min_workers == self.max_workers:
            return ActorPoolStrategy(size=self.min_workers)
        return ActorPoolStrategy(min_size=self.min_workers, max_size=self.max_workers)


def _pack(carrier: Carrier) -> dict[str, Any]:
    return {
        "item": json.dumps(carrier.item),
        "row": json.dumps(carrier.row),
        "payload": carrier.payload,
    }


def _unpack(row: dict[str, Any]) -> Carrier:
    payload = row.get("payload") or b""
    return Carrier(json.loads(row["item"]), json.loads(row["row"]), bytes(payload))


def _read(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return _pack(read_stage(_unpack(row), settings))


def _write(row: dict[str, Any], settings: Settings) -> dict[str, Any]:
    carrier = write_stage(_unpack(row), settings)
    return {"key": carrier.row["key"], "row": json.dumps(carrier.row)}


class SeriesPredictor:
    """A predicting actor: loads the ensemble once, then segments one series per call."""

    def __init__(self, settings: Settings) -> None:
        import ray

        self.settings = settings
        self.backend = make_predictor(settings)
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        import pandas as pd

        packed = [
            _pack(predict_stage(_unpack(row), self.backend, self.settings.out, self.node_id))
            for row in batch.to_dict("records")
        ]
        return pd.DataFrame(packed, columns=["item", "row", "payload"])


def run_pipeline(
    carriers: list[Carrier],
    settings: Settings,
    pool: PoolSize,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the series through the pipeline on the connected Ray cluster; returns their final rows
    (``on_row`` sees each as it arrives, for progress).

    Through Ray Client (``ray://``) this process has no core worker, which Ray Data's streaming
    executor needs (Ray 2.60: ``BlockRefCounter``), so the pipeline then runs in a task on the
    cluster and streams its rows back here.
    """
    if not carriers:
        return []
    if _through_ray_client():
        return _run_in_cluster_task(carriers, settings, pool, on_row)
    rows = []
    for row in _rows(carriers, settings, pool):
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _through_ray_client() -> bool:
    import ray.util.client

    return bool(ray.util.client.ray.is_connected())


def _run_in_cluster_task(
    carriers: list[Carrier],
    settings: Settings,
    pool: PoolSize,
    on_row: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """The pipeline in a task on the cluster; rows come back through a queue actor as they are
    done (Ray Client has no streaming generators), so progress still moves row by row."""
    import queue as stdlib_queue

    import ray
    from ray.util.queue import Queue

    rows_queue = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(num_cpus=0, max_retries=0)(_rows_into)
    done = task.remote(carriers, settings, pool, rows_queue)
    rows: list[dict[str, Any]] = []
    try:
        while len(rows) < len(carriers):
            try:
                row = rows_queue.get(timeout=2)
            except stdlib_queue.Empty:
                finished, _ = ray.wait([done], timeout=0)
                if finished and rows_queue.empty():
                    ray.get(done)  # raises the task's error; else every row has been read
                    break
                continue
            rows.append(row)
            if on_row is not None:
                on_row(row)
        ray.get(done)
    finally:
        rows_queue.shutdown()
    return rows


def _rows_into(carriers: list[Carrier], settings: Settings, pool: PoolSize, rows_queue) -> int:
    count = 0
    for row in _rows(carriers, settings, pool):
        rows_queue.put(row)
        count += 1
    return count


def _rows(carriers: list[Carrier], settings: Settings, pool: PoolSize) -> Iterator[dict[str, Any]]:
    """The pipeline itself: each series' final row as it leaves the write stage."""
    import ray.data
    from ray.util.annotations import RayDeprecationWarning

    if not pool.gpus_per_worker and settings.device is None:
        settings = replace(settings, device="cpu")  # an actor without a GPU share stays off them
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command shows its own progress
    # series go to the least busy predicting actor, not to the one beside their read output: a series
    # is megabytes and its prediction seconds, so locality would leave another node's GPU idle while
    # the reads happened to run elsewhere (Ray 2.60 still reads this option, documented as deprecated)
    context.execution_options.actor_locality_enabled = False
    # start once the pool's minimum actors have loaded the model: otherwise the first actor up takes
    # every queued series while the others still load; a pool the cluster cannot host fails then
    context.wait_for_min_actors_s = WAIT_FOR_ACTORS_S
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = ray.data.from_items([_pack(c) for c in carriers], override_num_blocks=len(carriers))
    ds = ds.map(_read, fn_kwargs={"settings": settings}, num_cpus=1)
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for restarts or placement: they go through **ray_remote_args,
        # which warns of its removal in 2.64 (ray/data/dataset.py); revisit when the lock moves.
        warnings.simplefilter("ignore", RayDeprecationWarning)
        ds = ds.map_batches(
            SeriesPredictor,
            fn_constructor_kwargs={"settings": settings},
            batch_size=1,
            batch_format="pandas",
            compute=pool.strategy(),
            num_gpus=pool.gpus_per_worker or None,
            num_cpus=pool.cpus_per_worker,
            max_restarts=MAX_ACTOR_RESTARTS,
            max_task_retries=MAX_ACTOR_RESTARTS,
            scheduling_strategy="SPREAD",  # actors over all nodes, so every GPU gets one
        )
    ds = ds.map(_write, fn_kwargs={"settings": settings}, num_cpus=1)
    for packed in ds.iter_rows():
        yield json.loads(packed["row"])


def parse_workers(text: str | None, default_max: int) -> tuple[int, int]:
    """``N`` (a fixed pool) or ``MIN-MAX`` (autoscaling); None: ``1-default_max``."""
    if text is None:
        return 1, max(1, default_max)
    try:
        low, _, high = text.partition("-")
        pair = (int(low), int(high or low))
    except ValueError:
        raise OrgansegError(f"--workers {text}: give N or MIN-MAX, e.g. 4 or 1-8") from None
    if not 1 <= pair[0] <= pair[1]:
        raise OrgansegError(f"--workers {text}: need 1 <= MIN <= MAX")
    return pair


def pool_size(
    gpus_per_worker: float | None, workers: str | None, cpus_per_worker: float = 1.0
) -> PoolSize:
    """The predicting actor pool the options ask for, against the GPUs and CPUs the connected cluster
    has (an actor no node can host would leave the run waiting for it, so that is refused here)."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0))
    share = gpus_per_worker if gpus_per_worker is not None else (1.0 if gpus else 0.0)
    if share > 0 and gpus == 0:
        raise OrgansegError(f"--gpus-per-worker {share}: the Ray cluster has no GPU")
    largest_node = max(
        (float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0
    )
    if cpus_per_worker > largest_node:
        raise OrgansegError(
            f"--cpus-per-worker {cpus_per_worker:g}: no node of the Ray cluster has that many CPUs "
            f"(the largest has {largest_node:g})"
        )
    limit = int(gpus // share) if share > 0 else 1
    low, high = parse_workers(workers, limit)
    return PoolSize(low, high, share, cpus_per_worker)
