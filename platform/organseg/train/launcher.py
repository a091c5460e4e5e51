"""``organseg train``: every member as its own Ray Train run, all at the same time.

One ``TorchTrainer`` per member (DDP across its workers when it has several), launched from driver
threads so Ray schedules them side by side on the cluster's GPUs or CPUs. A failing member is reported
and leaves the others alone. Rerunning the same command resumes unfinished members from their latest
checkpoints (Ray Train finds the run by its storage path and name) and skips finished ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from rich.console import Console
from rich.live import Live

from organseg.config import ExperimentConfig, MemberConfig
from organseg.ensemble.spec import MemberEntry, entry_for, load_spec, save_spec, spec_for
from organseg.errors import ConfigError
from organseg.resources import Request, largest_node, settle
from organseg.runtime import ray_session
from organseg.tasks import get_task
from organseg.train import storage
from organseg.train.core import MEMBER_FILE, WEIGHTS_FILE, TrainPayload
from organseg.train.data import PreparedData, prepare_data
from organseg.train.loop import train_member_loop
from organseg.train.progress import ProgressBoard, ProgressCallback, render_table

OUTCOME_FILE = "organseg-outcome.json"
RUN_FILE = "organseg-run.json"


@dataclass
class MemberOutcome:
    """How one member's training ended."""

    name: str
    status: str  # "trained" | "already trained" | "failed"
    best_val_dice: float | None = None
    best_epoch: int | None = None
    checkpoint: str | None = None
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class TrainingReport:
    model_dir: Path | None
    outcomes: list[MemberOutcome]
    curves_png: Path | None = None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def member_fingerprint(config: ExperimentConfig, member: MemberConfig, data: PreparedData) -> str:
    """What makes a run "the same run": member settings, organs, preprocessing, augmentation and split."""
    settings = member.model_dump(mode="json", exclude={"fault", "max_failures", "epochs"})
    blob = json.dumps(
        {
            "member": settings,
            "organs": list(config.organs_for(member)),
            "preprocess": config.preprocess.model_dump(mode="json"),
            "augment": config.augment.model_dump(mode="json"),
            "train": data.ids_for(member, "train"),
            "val": data.ids_for(member, "val"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _payload(
    config: ExperimentConfig, member: MemberConfig, data: PreparedData, run_root: str
) -> TrainPayload:
    return TrainPayload(
        member=member.model_dump(mode="json"),
        organs=list(config.organs_for(member)),
        preprocess=config.preprocess.model_dump(mode="json"),
        augment=config.augment.model_dump(mode="json"),
        cache_dir=str(data.cache.root),
        train_ids=data.ids_for(member, "train"),
        val_ids=data.ids_for(member, "val"),
        fault_dir=None if "://" in run_root else storage.join(run_root, ".faults"),
    )


def make_trainer(
    member: MemberConfig,
    payload: TrainPayload,
    run_root: str,
    run_name: str,
    callbacks: list[Any],
) -> TorchTrainer:
    """The TorchTrainer of one member: its scaling, storage, fault tolerance and checkpoint policy."""
    resources: dict[str, float] = {"CPU": member.cpus_per_worker}
    if member.use_gpu:
        resources["GPU"] = member.gpu_fraction
    # NCCL refuses two ranks on one GPU; gloo also serves CPU-only runs.
    backend = "nccl" if member.use_gpu and member.gpu_fraction >= 1.0 else "gloo"
    return TorchTrainer(
        train_member_loop,
        train_loop_config=payload.to_dict(),
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=member.num_workers, use_gpu=member.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=run_root,
            failure_config=FailureConfig(max_failures=member.max_failures),
            # Ray keeps the latest checkpoint too, so a resume never loses progress.
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="val_dice", checkpoint_score_order="max"
            ),
            callbacks=callbacks,
        ),
    )


def member_request(config: ExperimentConfig, member: MemberConfig) -> Request:
    """What one member's Ray Train run asks of the cluster: one bundle per worker."""
    bundle: dict[str, float] = {"CPU": member.cpus_per_worker}
    if member.use_gpu:
        bundle["GPU"] = member.gpu_fraction
    index = [m.name for m in config.members].index(member.name)
    return Request(member.name, (bundle,) * member.num_workers, source=f"members.{index}")


def member_advice(request: Request, nodes: list[dict[str, float]]) -> str:
    """``--set`` overrides under which the member fits these nodes (one process per node at most)."""
    largest = largest_node(nodes)
    total_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    bundle = dict(request.bundles[0])
    key = request.source
    sets = []
    if bundle.get("GPU", 0.0) > largest.get("GPU", 0.0):
        if largest.get("GPU", 0.0) <= 0:
            sets.append(f"{key}.use_gpu=false")
            bundle.pop("GPU")
        else:
            sets.append(f"{key}.gpu_fraction={largest['GPU']:g}")
    cpus = min(bundle.get("CPU", 1.0), largest.get("CPU", 1.0))
    if cpus < bundle.get("CPU", 1.0):
        sets.append(f"{key}.cpus_per_worker={cpus:g}")
    workers = max(1, int(total_cpu // cpus)) if cpus > 0 else 1
    if len(request.bundles) > workers:
        sets.append(f"{key}.num_workers={workers}")
    return " ".join(f"--set {s}" for s in sets)


def describe_failure(exc: BaseException) -> str:
    """The root cause of a failed run in one or two lines (Ray wraps worker tracebacks several deep)."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        cause = next(iter(failures.values()))
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _fit_member(
    member: MemberConfig, payload: TrainPayload, run_root: str, board: Any, status: str = "starting"
) -> MemberOutcome:
    board.start.remote(member.name, member.epochs, status)
    trainer = make_trainer(
        member, payload, run_root, member.name, [ProgressCallback(board, member.name)]
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # one member's failure must not take down the others
        board.finish.remote(member.name, "failed")
        return MemberOutcome(member.name, "failed", error=describe_failure(exc))
    best = None
    if result.best_checkpoints:
        best = max(result.best_checkpoints, key=lambda pair: pair[1].get("val_dice", -1.0))
    checkpoint, metrics = best if best else (result.checkpoint, result.metrics or {})
    if checkpoint is None:
        board.finish.remote(member.name, "failed")
        return MemberOutcome(member.name, "failed", error="training reported no checkpoint")
    board.finish.remote(member.name, "done")
    return MemberOutcome(
        member.name,
        "trained",
        best_val_dice=metrics.get("val_dice"),
        best_epoch=metrics.get("epoch"),
        history=_full_history(result.checkpoint),
        checkpoint=checkpoint.path
        if "://" not in run_root
        else f"{run_root.split('://')[0]}://{checkpoint.path}",
    )


def _full_history(latest: Any) -> list[dict[str, Any]]:
    """Every epoch so far, from the latest checkpoint (the best one only knows the epochs before it)."""
    if latest is None:
        return []
    try:
        with latest.as_directory() as folder:
            return json.loads((Path(folder) / MEMBER_FILE).read_text()).get("history", [])
    except (OSError, ValueError):
        return []


def _previous_outcome(
    run_dir: str, fingerprint: str, restart: bool, name: str
) -> MemberOutcome | None:
    """A finished earlier run of the same member is reused; a changed member must not resume silently."""
    run_file = storage.join(run_dir, RUN_FILE)
    if restart:
        storage.delete_dir(run_dir)
        return None
    if storage.exists(run_file):
        earlier = json.loads(storage.read_text(run_file)).get("fingerprint")
        if earlier != fingerprint:
            raise ConfigError(
                f"member {name!r} changed since its run in {run_dir} was started; pass --restart to train it "
                "from scratch, or give the experiment a new name"
            )
    outcome_file = storage.join(run_dir, OUTCOME_FILE)
    if storage.exists(outcome_file):
        data = json.loads(storage.read_text(outcome_file))
        if data.get("status") == "trained" and data.get("fingerprint") == fingerprint:
            data.pop("fingerprint", None)
            data["status"] = "already trained"
            return MemberOutcome(**data)
    return None


def train_experiment(
    config: ExperimentConfig,
    *,
    members: list[str] | None = None,
    address: str | None = None,
    restart: bool = False,
    console: Console | None = None,
    autoscaling: bool | None = None,
    resource_wait_s: float = 600.0,
) -> TrainingReport:
    """Train the experiment's members in parallel and write the model directory.

    Before any run starts, the members' workers, CPUs and GPU fractions are compared with the cluster:
    a member that can never be placed fails the command at once (naming the overrides that would fit),
    unless an autoscaler may add nodes (``autoscaling``: detected when None); then the command waits up to
    ``resource_wait_s``, showing what is missing.
    """
    console = console or Console(stderr=True)
    selected = [config.member(n) for n in members] if members else list(config.members)
    console.print(
        f"[bold]{config.name}[/]: preparing data (CHAOS task {config.task}: {get_task(config.task).title})"
    )
    data = prepare_data(config)
    console.print(
        f"  {len(data.cache.samples)} samples from {data.root}; {len(data.train_ids)} train / "
        f"{len(data.val_ids)} validation; cache {data.cache.root}"
    )
    run_root = storage.join(config.storage_root(), "train")
    outcomes: dict[str, MemberOutcome] = {}
    to_run: list[tuple[MemberConfig, str]] = []
    for member in selected:
        if not data.ids_for(member, "train") or not data.ids_for(member, "val"):
            outcomes[member.name] = MemberOutcome(
                member.name, "failed", error="no training or validation samples for its modalities"
            )
            continue
        fingerprint = member_fingerprint(config, member, data)
        run_dir = storage.join(run_root, member.name)
        previous = _previous_outcome(run_dir, fingerprint, restart, member.name)
        if previous is not None:
            outcomes[member.name] = previous
        else:
            storage.write_text(
                storage.join(run_dir, RUN_FILE), json.dumps({"fingerprint": fingerprint})
            )
            to_run.append((member, fingerprint))

    if to_run:
        with ray_session(address):
            queued = _check_resources(
                config, [m for m, _ in to_run], console, autoscaling, resource_wait_s
            )
            board = ProgressBoard.remote()
            finished = _run_parallel(config, data, run_root, to_run, board, console, queued)
        for (member, fingerprint), outcome in zip(to_run, finished, strict=True):
            if outcome.ok and outcome.checkpoint:
                record = {**asdict(outcome), "fingerprint": fingerprint}
                storage.write_text(
                    storage.join(run_root, member.name, OUTCOME_FILE), json.dumps(record)
                )
            outcomes[member.name] = outcome

    ordered = [outcomes[m.name] for m in selected]
    model_dir, curves = None, None
    if any(o.ok and o.checkpoint for o in ordered):
        model_dir = export_model_dir(config, ordered)
        curves = plot_learning_curves(model_dir, [o for o in ordered if o.ok])
    return TrainingReport(model_dir, ordered, curves)


def _check_resources(
    config: ExperimentConfig,
    members: list[MemberConfig],
    console: Console,
    autoscaling: bool | None,
    timeout_s: float,
) -> dict[str, str]:
    """Fail now for members that can never be placed; wait (showing what is missing) where an autoscaler
    may add nodes. Returns the members that fit the cluster but not beside the others, with why."""
    requests = [member_request(config, m) for m in members]
    title = f"{config.name}: waiting for resources (up to {timeout_s:g} s)"
    live = Live(render_table({}, title), console=console) if console.is_terminal else None
    shown: dict[str, str] = {}

    def on_wait(missing: dict[str, str]) -> None:
        if live is not None:  # the live table, one row per member, says what each one lacks
            rows = {
                m.name: {
                    "status": f"waiting for resources: {missing[m.name]}"
                    if m.name in missing
                    else "placeable",
                    "epochs": m.epochs,
                }
                for m in members
            }
            live.update(render_table(rows, title))
        elif missing != shown:
            shown.clear()
            shown.update(missing)
            for name, why in sorted(missing.items()):
                console.print(f"  [yellow]waiting for resources[/] {name}: {why}", highlight=False)

    if live is not None:
        live.start()
    try:
        verdict = settle(
            requests,
            what=f"{len(requests)} member(s) of {config.name}",
            advice=member_advice,
            autoscaling=autoscaling,
            timeout_s=timeout_s,
            on_wait=on_wait,
        )
    finally:
        if live is not None:
            live.stop()
    if verdict.waiting:
        console.print(
            "  not all members fit at once; these start when others finish: "
            + "; ".join(f"{n} ({why})" for n, why in sorted(verdict.waiting.items())),
            highlight=False,
        )
    return verdict.waiting


def _run_parallel(
    config: ExperimentConfig,
    data: PreparedData,
    run_root: str,
    to_run: list[tuple[MemberConfig, str]],
    board: Any,
    console: Console,
    queued: dict[str, str] | None = None,
) -> list[MemberOutcome]:
    queued = queued or {}
    pool = ThreadPoolExecutor(max_workers=len(to_run), thread_name_prefix="member")
    futures: list[Future[MemberOutcome]] = [
        pool.submit(
            _fit_member,
            member,
            _payload(config, member, data, run_root),
            run_root,
            board,
            f"waiting for resources: {queued[member.name]}"
            if member.name in queued
            else "starting",
        )
        for member, _ in to_run
    ]
    try:
        _follow(
            futures,
            board,
            console,
            title=f"{config.name}: {len(to_run)} member(s) training in parallel",
        )
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [f.result() for f in futures]


def _follow(futures: list[Future[Any]], board: Any, console: Console, title: str) -> None:
    """Show live progress until every future is done: a table on a terminal, epoch lines otherwise."""
    printed: dict[str, int] = {}

    def snapshot() -> dict[str, Any]:
        try:
            return ray.get(board.snapshot.remote(), timeout=10)
        except Exception:
            return {}

    if console.is_terminal:
        with Live(render_table({}, title), console=console, refresh_per_second=2) as live:
            while not all(f.done() for f in futures):
                live.update(render_table(snapshot(), title))
                time.sleep(1.0)
            live.update(render_table(snapshot(), title))
        return
    while True:
        done = all(f.done() for f in futures)
        for name, entry in sorted(snapshot().items()):
            history = entry.get("history") or []
            for item in history[printed.get(name, 0) :]:
                console.print(
                    f"  \\[{name}] epoch {int(item.get('epoch', 0)) + 1}/{int(item.get('epochs', 0))} "
                    f"loss {item.get('train_loss', float('nan')):.4f} "
                    f"val Dice {item.get('val_dice', float('nan')):.4f} "
                    f"(best {item.get('best_val_dice', float('nan')):.4f}, "
                    f"{item.get('train_slices_per_s', 0.0):.1f} slices/s)",
                    highlight=False,
                    soft_wrap=True,
                )
            printed[name] = len(history)
        if done:
            return
        time.sleep(1.0)


def _fetch_checkpoint(uri: str, into: Path) -> Path:
    from ray.train import Checkpoint

    if "://" not in uri:
        return Path(uri)
    Checkpoint(uri).to_directory(str(into))
    return into


def export_model_dir(config: ExperimentConfig, outcomes: list[MemberOutcome]) -> Path:
    """Copy each successful member's best weights into the model directory and write ensemble.yaml.

    Members trained earlier into the same model directory but not part of this run are kept, so
    ``organseg train --member X`` refreshes one member without dropping the rest.
    """
    model_dir = config.model_dir()
    model_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, MemberEntry] = {}
    try:
        entries = {m.name: m for m in load_spec(model_dir).members}
    except Exception:
        entries = {}
    for outcome in outcomes:
        if not (outcome.ok and outcome.checkpoint):
            continue
        member = config.member(outcome.name)
        with tempfile.TemporaryDirectory() as tmp:
            source = _fetch_checkpoint(outcome.checkpoint, Path(tmp))
            target = model_dir / member.name
            staging = model_dir / f".{member.name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for name in (WEIGHTS_FILE, MEMBER_FILE):
                shutil.copy2(source / name, staging / name)
            description = json.loads((staging / MEMBER_FILE).read_text())
            shutil.rmtree(target, ignore_errors=True)
            staging.replace(target)
        if not outcome.history:
            outcome.history = description.get("history", [])
        entries[member.name] = entry_for(
            config,
            member,
            val_dice=description.get("metrics", {}).get("val_dice"),
            epoch=description.get("epoch"),
        )
    order = [m.name for m in config.members]
    members = sorted(
        entries.values(), key=lambda e: order.index(e.name) if e.name in order else len(order)
    )
    spec = spec_for(config, members)
    save_spec(spec, model_dir)
    return model_dir


def plot_learning_curves(model_dir: Path, outcomes: list[MemberOutcome]) -> Path | None:
    """One PNG with every member's training loss and validation Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(o.name, o.history) for o in outcomes if o.history]
    if not curves:
        return None
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name, history in curves:
        epochs = [h["epoch"] + 1 for h in history]
        ax_loss.plot(
            epochs, [h.get("train_loss", float("nan")) for h in history], marker="o", label=name
        )
        ax_dice.plot(
            epochs, [h.get("val_dice", float("nan")) for h in history], marker="o", label=name
        )
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_dice.set(
        title="validation Dice (3D, mean over organs)", xlabel="epoch", ylabel="Dice", ylim=(0, 1)
    )
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend()
    path = model_dir / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
