"""The member and ensemble deployments of the graph (the router/ingress is in ``router.py``).

Data plane: the ensemble preprocesses a volume once, puts the network input in the object store once and
hands every member only the reference; members read it zero-copy, split it into slice chunks that
``@serve.batch`` merges across concurrent requests into one forward pass, and answer with uint8
probabilities. With ``colocate_members`` the ensemble runs its members in its own replica instead (one
process, no inter-process pixels at all); the serve benchmark measures which is faster on a given machine.

Live model switch: every deployment accepts ``model_dir`` in its ``user_config`` and loads it in place
(no replica restart). A member keeps the previous version loaded as well and serves whichever version the
calling ensemble asks for, and an ensemble retries a member that does not hold its version yet, so no
answer ever mixes two model versions while the switch rolls through the replicas.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from organseg.config import PostprocessConfig
from organseg.ensemble.members import MemberRunner
from organseg.ensemble.prediction import Prediction
from organseg.ensemble.predictor import EnsemblePredictor, assemble_prediction, prepare_input
from organseg.ensemble.sliding import feet_first
from organseg.ensemble.spec import load_spec
from organseg.ensemble.version import model_version
from organseg.io.modality import ModalityDecision
from organseg.io.volume import Modality, Volume
from organseg.serve.app_args import AppArgs
from organseg.serve.ops import metrics
from organseg.serve.ops.retry import ModelVersionUnavailable, with_retries

#: Member model versions a member replica keeps loaded (the current and the previous one).
KEPT_VERSIONS = 2


@dataclass(frozen=True)
class MemberRequest:
    """What an ensemble asks of a member for one volume."""

    #: (Z, C, S, S) float16 network input in the object store, put once for every member (a field,
    #: not an argument, so Serve passes the reference and the member reads it zero-copy)
    input: ray.ObjectRef
    #: the prepared volume's voxel spacing (x, y, z): 3D members resample with it
    spacing: tuple[float, float, float]
    #: slices per chunk through the member's @serve.batch queue
    chunk: int = 8
    #: the volume lies feet first: 3D members see it head first
    flip_z: bool = False
    #: the model version that must answer (None: the member's current one)
    version: str | None = None


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class MemberDeployment:
    """One ensemble member; several ensembles (modalities) may share it."""

    def __init__(self, member: str, options: AppArgs) -> None:
        self.name = member
        self.device = options.device
        self.precision = options.member_precision
        self.compile = options.compile_members
        self.chunk_slices = options.chunk_slices
        self.max_batch_size = 4
        self.models: dict[str, MemberRunner] = {}  # model version → loaded network, newest last
        self.current = self._load(options.model_dir)
        # 3D members: windows per forward pass (the memory bound), from the Serve profile's user_config
        volume_cfg = self.runner.entry.volume
        self.window_batch_size = volume_cfg.window_batch_size if volume_cfg else None
        # How well @serve.batch merges work: forward passes, chunks, and the most requests in one pass;
        # and volumes in flight here now / cancelled by their caller (a client's deadline, say).
        self.counters = {
            "forward_passes": 0,
            "chunks": 0,
            "max_requests_per_pass": 0,
            "max_slices_per_pass": 0,
            "in_flight": 0,
            "cancelled": 0,
        }

    def _load(self, model_dir: str) -> str:
        version = model_version(model_dir).id
        if version not in self.models:
            spec = load_spec(model_dir)
            entry = next(m for m in spec.members if m.name == self.name)
            self.size = spec.preprocess.size
            # one forward pass per @serve.batch: at most max_batch_size chunks of chunk_slices slices
            runner = MemberRunner(
                model_dir,
                entry,
                device=self.device,
                batch_size=self.chunk_slices * self.max_batch_size,
                precision=self.precision,
                compile=self.compile,
                per_channel=spec.preprocess.channels is not None,
            )
            self._warm_up(runner)  # before it serves (and, at start, before the replica is ready)
            self.models[version] = runner
            while len(self.models) > KEPT_VERSIONS:
                self.models.pop(next(iter(self.models)))
        return version

    @property
    def runner(self) -> MemberRunner:
        """The current version's network."""
        return self.models[self.current]

    def _warm_up(self, runner: MemberRunner) -> None:
        """Compile / autotune for the pass size now, not on the first request (GPU or compiled only:
        on CPU eager there is nothing to prepare)."""
        if runner.compiled or runner.device.type == "cuda":
            runner.warm_up(self.size)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_size`` (chunks per forward pass), ``batch_wait_timeout_s``, and
        ``model_dir`` (load that model directory's weights beside the current ones, then switch)."""
        if "max_batch_size" in config:
            self.max_batch_size = int(config["max_batch_size"])
            self.run_chunks.set_max_batch_size(self.max_batch_size)
            for runner in self.models.values():
                runner.batch_size = self.chunk_slices * self.max_batch_size
                self._warm_up(runner)  # reconfigure runs before the replica reports ready
        if "batch_wait_timeout_s" in config:
            self.run_chunks.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
        if "window_batch_size" in config:
            self.window_batch_size = max(1, int(config["window_batch_size"]))
        if config.get("model_dir"):
            self.current = await asyncio.to_thread(self._load, str(config["model_dir"]))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def run_chunks(self, items: list[tuple[int, str, np.ndarray]]) -> list[np.ndarray]:
        """``(request id, model version, chunk)`` items from concurrent requests → one forward pass per
        version (only during a live switch are there two)."""
        out: list[np.ndarray | None] = [None] * len(items)
        for version in dict.fromkeys(v for _, v, _ in items):
            picked = [i for i, (_, v, _) in enumerate(items) if v == version]
            chunks = [items[i][2] for i in picked]
            sizes = [len(c) for c in chunks]
            stacked = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            probs = await asyncio.to_thread(self.models[version].predict, stacked)
            for i, part in zip(picked, np.split(probs, np.cumsum(sizes)[:-1]), strict=True):
                out[i] = part
            c = self.counters
            c["forward_passes"] += 1
            c["chunks"] += len(picked)
            c["max_requests_per_pass"] = max(
                c["max_requests_per_pass"], len({items[i][0] for i in picked})
            )
            c["max_slices_per_pass"] = max(c["max_slices_per_pass"], len(stacked))
        return out  # type: ignore[return-value]

    async def predict(self, request: MemberRequest) -> np.ndarray:
        """The request's volume → ``(Z, K, S, S)`` uint8, computed by exactly the requested model
        version (or the current one when none is named).

        When the caller is cancelled (its client's deadline passed), Serve cancels this call: the
        chunks still queued for a forward pass are dropped; a pass already running finishes.
        """
        self.counters["in_flight"] += 1
        try:
            return await self._predict(request)
        except asyncio.CancelledError:
            self.counters["cancelled"] += 1
            metrics.count_cancelled(f"member-{self.name}")
            raise
        finally:
            self.counters["in_flight"] -= 1

    async def _predict(self, request: MemberRequest) -> np.ndarray:
        version = request.version or self.current
        if version not in self.models:
            raise ModelVersionUnavailable(
                f"member {self.name} holds {sorted(self.models)}, not {version}"
            )
        volume = await request.input
        runner = self.models[version]
        if runner.is_3d:  # the whole volume through the sliding window, not slice chunks
            self.counters["forward_passes"] += 1
            return await asyncio.to_thread(
                runner.predict_volume,
                volume,
                request.spacing,
                self.window_batch_size,
                request.flip_z,
            )
        chunk = max(1, request.chunk)
        rid = id(request)
        parts = await asyncio.gather(
            *(
                self.run_chunks((rid, version, volume[i : i + chunk]))
                for i in range(0, len(volume), chunk)
            )
        )
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint8)

    async def stats(self) -> dict[str, int]:
        """Batches served so far and their sizes (benchmarks read them to see @serve.batch at work),
        volumes in flight and calls cancelled by their caller."""
        return dict(self.counters)

    async def ping(self) -> str:
        """This member's name: a cheap call that proves the replica answers."""
        return self.name

    async def versions(self) -> dict[str, Any]:
        return {"current": self.current, "loaded": list(self.models)}


@dataclass
class _Loaded:
    """One model version as an ensemble replica serves it (swapped whole on a live switch)."""

    version: str
    spec: Any
    member_names: list[str]
    predictor: EnsemblePredictor | None


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class EnsembleDeployment:
    """One modality's ensemble: preprocess once, fan out, average, threshold, postprocess, restore."""

    def __init__(
        self, modality: str, members: dict[str, DeploymentHandle], options: AppArgs
    ) -> None:
        self.modality = Modality.parse(modality)
        self.members = members
        self.colocate = options.colocate_members
        self.chunk_slices = options.chunk_slices
        self.device = options.device
        self.precision = options.member_precision
        self.compile = options.compile_members
        self.retry_budget_s = options.retry_budget_s
        self.postprocess: dict[str, Any] = {}
        self.loaded = self._load(options.model_dir)

    def _load(self, model_dir: str) -> _Loaded:
        spec = load_spec(model_dir)
        if self.postprocess:
            merged = {**spec.postprocess.model_dump(), **self.postprocess}
            spec.postprocess = PostprocessConfig.model_validate(merged)
        names = [m.name for m in spec.members_for(self.modality)]
        predictor = None
        if self.colocate:
            predictor = EnsemblePredictor(
                model_dir, device=self.device, precision=self.precision, compile=self.compile
            )
            predictor.spec = spec
            for name in names:
                runner = predictor.runner(name)  # load weights now, not on the first request
                if runner.compiled or runner.device.type == "cuda":
                    runner.warm_up(spec.preprocess.size)  # compile / autotune before ready
        return _Loaded(model_version(model_dir).id, spec, names, predictor)

    @property
    def spec(self) -> Any:
        return self.loaded.spec

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: any PostprocessConfig field (threshold, component_threshold,
        largest_component), and ``model_dir`` to switch to that model directory in place."""
        self.postprocess = {k: v for k, v in config.items() if k != "model_dir"}
        if config.get("model_dir"):
            self.loaded = await asyncio.to_thread(self._load, str(config["model_dir"]))
        elif self.postprocess:
            loaded = self.loaded
            merged = {**loaded.spec.postprocess.model_dump(), **self.postprocess}
            loaded.spec.postprocess = PostprocessConfig.model_validate(merged)

    async def segment(
        self,
        image: Volume,
        modality: str | None = None,
        partner: Volume | None = None,
        t2: Volume | None = None,
        decision: ModalityDecision | None = None,
        channels: dict[str, Volume] | None = None,
    ) -> Prediction:
        """Segment one volume with this modality's members: the label map on the input's grid (uint8
        organ ids), organ volumes in mL, per-organ member disagreement and timings in seconds.
        ``modality`` defaults to this ensemble's; ``partner`` is the other T1 phase when T1 in/out
        are stacked, ``t2`` the T2-SPIR series when the ensemble stacks it as a third channel,
        ``channels`` every named channel of a model that stacks a dataset's channels. A
        cancelled call (the client gave up) cancels its member calls with it.
        """
        try:
            return await self._segment(image, modality, partner, t2, decision, channels)
        except asyncio.CancelledError:
            metrics.count_cancelled(f"ensemble-{self.modality.value}")
            raise

    async def _segment(
        self,
        image: Volume,
        modality: str | None,
        partner: Volume | None,
        t2: Volume | None,
        decision: ModalityDecision | None = None,
        channels: dict[str, Volume] | None = None,
    ) -> Prediction:
        loaded = self.loaded  # one version for the whole request, even if a switch lands meanwhile
        if loaded.predictor is not None:
            prediction = await asyncio.to_thread(
                loaded.predictor.predict,
                image,
                modality or self.modality,
                partner,
                t2,
                decision,
                channels,
            )
            prediction.model_version = loaded.version
            return prediction
        started = time.perf_counter()
        decision, prepared = await asyncio.to_thread(
            prepare_input,
            loaded.spec,
            image,
            modality or self.modality.value,
            partner,
            t2,
            decision=decision,
            channels=channels,
        )
        timings = {"preprocess": time.perf_counter() - started}
        ref = ray.put(prepared.array)  # once; every member reads the same object
        tick = time.perf_counter()
        x, y, z = prepared.prepared_geometry.spacing
        request = MemberRequest(
            input=ref,
            spacing=(float(x), float(y), float(z)),
            chunk=self.chunk_slices,
            flip_z=feet_first(prepared.geometry),
            version=loaded.version,
        )

        async def call(name: str) -> np.ndarray:
            return await with_retries(
                lambda: self.members[name].predict.remote(request),
                f"member-{name}",
                self.retry_budget_s,
            )

        results = await asyncio.gather(*(call(n) for n in loaded.member_names))
        timings["members"] = time.perf_counter() - tick
        probs = dict(zip(loaded.member_names, results, strict=True))
        prediction = await asyncio.to_thread(
            assemble_prediction, loaded.spec, prepared, decision, probs, timings
        )
        prediction.timings["ensemble_total"] = time.perf_counter() - started
        prediction.model_version = loaded.version
        return prediction

    async def health(self) -> dict[str, str]:
        """Every member answers (or the colocated models are loaded)."""
        loaded = self.loaded
        if loaded.predictor is not None:
            return {n: "loaded" for n in loaded.member_names}
        names = await asyncio.gather(*(self.members[n].ping.remote() for n in loaded.member_names))
        return {n: "ok" for n in names}

    async def version(self) -> str:
        return self.loaded.version
