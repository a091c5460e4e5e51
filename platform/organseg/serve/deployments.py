"""The member and ensemble deployments of the graph (the router/ingress is in ``router.py``).

Data plane: the ensemble preprocesses a volume once, puts the network input in the object store once and
hands every member only the reference; members read it zero-copy, split it into slice chunks that
``@serve.batch`` merges across concurrent requests into one forward pass, and answer with uint8
probabilities. With ``colocate_members`` the ensemble runs its members in its own replica instead (one
process, no inter-process pixels at all); the serve benchmark measures which is faster on a given machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from organseg.config import PostprocessConfig
from organseg.ensemble.members import MemberRunner
from organseg.ensemble.predictor import (
    EnsemblePredictor,
    Prediction,
    assemble_prediction,
    prepare_input,
)
from organseg.ensemble.sliding import feet_first
from organseg.ensemble.spec import load_spec
from organseg.io.volume import Modality, Volume


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class MemberDeployment:
    """One ensemble member; several ensembles (modalities) may share it."""

    def __init__(
        self,
        model_dir: str,
        member: str,
        device: str | None = None,
        precision: str | None = None,
        compile: bool = False,
        chunk_slices: int = 8,
    ) -> None:
        spec = load_spec(model_dir)
        entry = next(m for m in spec.members if m.name == member)
        self.size = spec.preprocess.size
        self.chunk_slices = chunk_slices
        # one forward pass per @serve.batch: at most max_batch_size chunks of chunk_slices slices
        self.runner = MemberRunner(
            model_dir,
            entry,
            device=device,
            batch_size=chunk_slices * 4,
            precision=precision,
            compile=compile,
        )
        self._warm_up()
        self.name = member
        # 3D members: windows per forward pass (the memory bound), from the Serve profile's user_config
        self.window_batch_size = entry.volume.window_batch_size if entry.volume else None
        # How well @serve.batch merges work: forward passes, chunks, and the most requests in one pass.
        self.counters = {
            "forward_passes": 0,
            "chunks": 0,
            "max_requests_per_pass": 0,
            "max_slices_per_pass": 0,
        }

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_size`` (chunks per forward pass) and ``batch_wait_timeout_s``."""
        if "max_batch_size" in config:
            self.run_chunks.set_max_batch_size(int(config["max_batch_size"]))
            self.runner.batch_size = self.chunk_slices * int(config["max_batch_size"])
            self._warm_up()  # reconfigure runs before the replica reports ready
        if "batch_wait_timeout_s" in config:
            self.run_chunks.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        if "window_batch_size" in config:
            self.window_batch_size = max(1, int(config["window_batch_size"]))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def run_chunks(self, items: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """``(request id, chunk)`` items from any number of concurrent requests → one forward pass."""
        chunks = [chunk for _, chunk in items]
        sizes = [len(c) for c in chunks]
        stacked = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        probs = await asyncio.to_thread(self.runner.predict, stacked)
        c = self.counters
        c["forward_passes"] += 1
        c["chunks"] += len(items)
        c["max_requests_per_pass"] = max(c["max_requests_per_pass"], len({rid for rid, _ in items}))
        c["max_slices_per_pass"] = max(c["max_slices_per_pass"], len(stacked))
        return np.split(probs, np.cumsum(sizes)[:-1])

    async def predict(self, request: dict[str, Any]) -> np.ndarray:
        """``{"input": [ObjectRef to (Z, C, S, S) float16], "chunk": n, "spacing": (x, y, z)}`` →
        ``(Z, K, S, S)`` uint8."""
        (ref,) = request["input"]  # wrapped in a list so Serve passes the reference, not the array
        volume = await ref
        if self.runner.is_3d:  # the whole volume through the sliding window, not slice chunks
            spacing = tuple(request["spacing"])
            flip_z = bool(request.get("flip_z", False))
            self.counters["forward_passes"] += 1
            return await asyncio.to_thread(
                self.runner.predict_volume, volume, spacing, self.window_batch_size, flip_z
            )
        chunk = max(1, int(request.get("chunk", 8)))
        rid = id(request)
        parts = await asyncio.gather(
            *(self.run_chunks((rid, volume[i : i + chunk])) for i in range(0, len(volume), chunk))
        )
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint8)

    def _warm_up(self) -> None:
        """Compile / autotune for the pass size now, not on the first request (GPU or compiled only:
        on CPU eager there is nothing to prepare)."""
        if self.runner.compiled or self.runner.device.type == "cuda":
            self.runner.warm_up(self.size)

    async def stats(self) -> dict[str, int]:
        """Batches served so far and their sizes (benchmarks read them to see @serve.batch at work)."""
        return dict(self.counters)

    async def ping(self) -> str:
        """This member's name: a cheap call that proves the replica answers."""
        return self.name


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class EnsembleDeployment:
    """One modality's ensemble: preprocess once, fan out, average, threshold, postprocess, restore."""

    def __init__(
        self,
        model_dir: str,
        modality: str,
        members: dict[str, DeploymentHandle],
        colocate: bool = False,
        chunk_slices: int = 8,
        device: str | None = None,
        precision: str | None = None,
        compile: bool = False,
    ) -> None:
        self.spec = load_spec(model_dir)
        self.modality = Modality.parse(modality)
        self.member_names = [m.name for m in self.spec.members_for(self.modality)]
        self.members = members
        self.chunk_slices = chunk_slices
        self.predictor = (
            EnsemblePredictor(model_dir, device=device, precision=precision, compile=compile)
            if colocate
            else None
        )
        if self.predictor is not None:
            for name in self.member_names:
                runner = self.predictor.runner(name)  # load weights now, not on the first request
                if runner.compiled or runner.device.type == "cuda":
                    runner.warm_up(self.spec.preprocess.size)  # compile / autotune before ready

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: any PostprocessConfig field (threshold, component_threshold, largest_component)."""
        merged = {**self.spec.postprocess.model_dump(), **config}
        self.spec.postprocess = PostprocessConfig.model_validate(merged)
        if self.predictor is not None:
            self.predictor.spec.postprocess = self.spec.postprocess

    async def segment(
        self, image: Volume, modality: str | None = None, partner: Volume | None = None
    ) -> Prediction:
        """Segment one volume with this modality's members: the label map on the input's grid (uint8
        organ ids), organ volumes in mL, per-organ member disagreement and timings in seconds.
        ``modality`` defaults to this ensemble's; ``partner`` is the other T1 phase when T1 in/out
        are stacked.
        """
        if self.predictor is not None:
            return await asyncio.to_thread(
                self.predictor.predict, image, modality or self.modality, partner
            )
        started = time.perf_counter()
        decision, prepared = await asyncio.to_thread(
            prepare_input, self.spec, image, modality or self.modality.value, partner
        )
        timings = {"preprocess": time.perf_counter() - started}
        ref = ray.put(prepared.array)  # once; every member reads the same object
        tick = time.perf_counter()
        request = {
            "input": [ref],
            "chunk": self.chunk_slices,
            "spacing": list(prepared.prepared_geometry.spacing),  # 3D members resample with it
            "flip_z": feet_first(prepared.geometry),  # and see the volume head-first
        }
        results = await asyncio.gather(
            *(self.members[n].predict.remote(request) for n in self.member_names)
        )
        timings["members"] = time.perf_counter() - tick
        probs = dict(zip(self.member_names, results, strict=True))
        prediction = await asyncio.to_thread(
            assemble_prediction, self.spec, prepared, decision, probs, timings
        )
        prediction.timings["ensemble_total"] = time.perf_counter() - started
        return prediction

    async def health(self) -> dict[str, str]:
        """Every member answers (or the colocated models are loaded)."""
        if self.predictor is not None:
            return {n: "loaded" for n in self.member_names}
        names = await asyncio.gather(*(self.members[n].ping.remote() for n in self.member_names))
        return {n: "ok" for n in names}
