"""``organseg train``: every member as its own Ray Train run, all at the same time.

One ``TorchTrainer`` per member (DDP across its workers when it has several), launched from driver
threads so Ray schedules them side by side on the cluster's GPUs or CPUs. A failing member is reported
and leaves the others alone. Rerunning the same command resumes unfinished members from their latest
checkpoints (Ray Train finds the run by its storage path and name) and skips finished ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from rich.console import Console

from organseg.config import ExperimentConfig, MemberConfig
from organseg.ensemble.modality_classifier import ModalityClassifier, fit_from_cache
from organseg.ensemble.spec import MEMBER_FILE, ClassifierEntry, load_spec, save_spec
from organseg.errors import ConfigError
from organseg.resources import Request, largest_node, settle
from organseg.runtime import autoscaler_present, cluster_resources, ray_session
from organseg.tasks import get_task
from organseg.train import storage
from organseg.train.data import PreparedData, prepare_data
from organseg.train.export import export_model_dir, fold_of
from organseg.train.loop import train_member_loop
from organseg.train.payload import TrainPayload
from organseg.train.progress import ProgressBoard, ProgressCallback
from organseg.train.tracking import RunTracking
from organseg.uri import is_uri
from organseg.viz.curves import plot_learning_curves

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


#: Shows a run's progress: called with the members' latest snapshot, whether the run is done, and a title;
#: returns when done (``organseg.viz.progress.LiveProgress`` draws it on a console).
ProgressView = Callable[[Callable[[], dict[str, Any]], Callable[[], bool], str], None]


@dataclass
class TrainingReport:
    """What ``train_experiment`` did: the model directory (None if no member trained) and each outcome."""

    model_dir: Path | None
    outcomes: list[MemberOutcome]
    curves_png: Path | None = None
    #: the modality classifier stored beside the members (None: not trained)
    modality_classifier: ModalityClassifier | None = None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


@dataclass(frozen=True)
class MemberPlan:
    """What one member's run needs, resolved once from the experiment: the layers below get plain values."""

    member: MemberConfig
    organs: tuple[str, ...]
    train_ids: list[str]
    val_ids: list[str]

    @property
    def name(self) -> str:
        return self.member.name


def plan_member(config: ExperimentConfig, member: MemberConfig, data: PreparedData) -> MemberPlan:
    """The organs ``member`` learns (its CHAOS task's for its modalities, or every label of a dataset
    with its own label set) and its samples of each split."""
    organs = (
        data.label_set.names
        if data.label_set is not None
        else get_task(config.task).organs_for(member.modalities or [])
    )
    return MemberPlan(
        member=member,
        organs=organs,
        train_ids=data.ids_for(member, "train"),
        val_ids=data.ids_for(member, "val"),
    )


def member_fingerprint(config: ExperimentConfig, plan: MemberPlan) -> str:
    """What makes a run "the same run": member settings, organs, preprocessing, augmentation and split."""
    settings = plan.member.model_dump(mode="json", exclude={"fault", "max_failures", "epochs"})
    blob = json.dumps(
        {
            "member": settings,
            "organs": list(plan.organs),
            "preprocess": config.preprocess.model_dump(mode="json"),
            "augment": config.augment.model_dump(mode="json"),
            "train": plan.train_ids,
            "val": plan.val_ids,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def member_payload(
    config: ExperimentConfig, plan: MemberPlan, data: PreparedData, run_root: str | None = None
) -> TrainPayload:
    """What ``plan``'s training run is given; ``run_root`` (a local one) holds the fault-injection
    folder, None: no fault injection (a run through the trainer core alone)."""
    return TrainPayload(
        member=plan.member,
        organs=list(plan.organs),
        preprocess=config.preprocess,
        augment=config.augment,
        cache_dir=str(data.cache.root),
        train_ids=plan.train_ids,
        val_ids=plan.val_ids,
        fault_dir=None
        if run_root is None or is_uri(run_root)
        else storage.join(run_root, ".faults"),
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
        train_loop_config={"payload": payload},
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
    parent, _ = fold_of(config, member.name)  # a fold member is configured by its k-fold member
    index = [m.name for m in config.members].index(parent)
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
        if not is_uri(run_root)
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
    run_dir: str, fingerprint: str, restart: bool, name: str, restart_hint: str = "pass --restart"
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
                f"member {name!r} changed since its run in {run_dir} was started; {restart_hint} to "
                "train it from scratch, or give the experiment a new name"
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
    progress: ProgressView | None = None,
    restart_hint: str = "pass --restart",
) -> TrainingReport:
    """Train the experiment's members in parallel and write the model directory.

    ``members`` limits the run to those names; ``progress`` shows the run while it trains (nothing is
    drawn without one); ``console`` gets the data summary. Before any run starts, the members' workers,
    CPUs and GPU fractions are compared with the cluster: a member that can never be placed fails the
    command at once (naming the overrides that would fit), unless an autoscaler may add nodes
    (``autoscaling``: detected when None); then the command waits up to ``resource_wait_s``, showing what
    is missing. ``restart_hint`` is how the calling command is told to start a changed member over
    (``organseg train``: ``--restart``; the quickstart: ``--clean``).
    """
    console = console or Console(stderr=True)
    selected = [config.member(n) for n in members] if members else list(config.members)
    if config.dataset.own_labels:
        console.print(
            f"[bold]{config.name}[/]: preparing data ({config.dataset.format} dataset, its own labels)"
        )
    else:
        console.print(
            f"[bold]{config.name}[/]: preparing data (CHAOS task {config.task}: {get_task(config.task).title})"
        )
    data = prepare_data(config)
    console.print(
        f"  {len(data.cache.samples)} samples from {data.root}; {len(data.train_ids)} train / "
        f"{len(data.val_ids)} validation; cache {data.cache.root}"
    )
    outcomes: dict[str, MemberOutcome] = {}
    units: list[MemberConfig] = []  # a k-fold member becomes its k fold members
    for member in selected:
        try:
            units += data.assign_folds(member, seed=config.dataset.split_seed)
        except ConfigError as exc:  # fewer patients than folds
            outcomes[member.name] = MemberOutcome(member.name, "failed", error=str(exc))
    plans = {m.name: plan_member(config, m, data) for m in units}
    run_root = storage.join(config.storage_root(), "train")
    to_run: list[tuple[MemberPlan, str]] = []
    for plan in plans.values():
        if not plan.train_ids or not plan.val_ids:
            outcomes[plan.name] = MemberOutcome(
                plan.name, "failed", error="no training or validation samples for its modalities"
            )
            continue
        fingerprint = member_fingerprint(config, plan)
        run_dir = storage.join(run_root, plan.name)
        previous = _previous_outcome(run_dir, fingerprint, restart, plan.name, restart_hint)
        if previous is not None:
            outcomes[plan.name] = previous
        else:
            storage.write_text(
                storage.join(run_dir, RUN_FILE), json.dumps({"fingerprint": fingerprint})
            )
            to_run.append((plan, fingerprint))

    tracking = start_tracking(config, data, run_root, console, "train") if to_run else None
    if to_run:
        assert tracking is not None
        with ray_session(address), tracking.failed_on_error():
            queued = _check_resources(
                config,
                [p.member for p, _ in to_run],
                console,
                progress,
                autoscaling,
                resource_wait_s,
            )
            board = ProgressBoard.remote()
            finished = _run_parallel(
                config, data, run_root, to_run, board, progress, queued, tracking
            )
        for (plan, fingerprint), outcome in zip(to_run, finished, strict=True):
            if outcome.ok and outcome.checkpoint:
                record = {**asdict(outcome), "fingerprint": fingerprint}
                storage.write_text(
                    storage.join(run_root, plan.name, OUTCOME_FILE), json.dumps(record)
                )
            outcomes[plan.name] = outcome

    ordered = [outcomes[m.name] for m in units] + [
        outcomes[m.name] for m in selected if m.folds and m.name in outcomes
    ]
    exported = [o for o in ordered if o.ok and o.checkpoint]
    if not exported:
        if tracking is not None:
            _finish_tracking(tracking, [outcomes[p.name] for p, _ in to_run], None, None)
        return TrainingReport(None, ordered)
    model_dir, histories = export_model_dir(
        config,
        {o.name: o.checkpoint for o in exported if o.checkpoint},
        {o.name: plans[o.name].organs for o in exported},
        label_set=data.label_set,
    )
    for outcome in exported:
        outcome.history = outcome.history or histories.get(outcome.name, [])
    curves = plot_learning_curves(model_dir, {o.name: o.history for o in ordered if o.ok})
    classifier = _train_modality_classifier(data, model_dir)
    if tracking is not None:
        _finish_tracking(tracking, [outcomes[p.name] for p, _ in to_run], model_dir, curves)
    return TrainingReport(model_dir, ordered, curves, classifier)


def start_tracking(
    config: ExperimentConfig, data: PreparedData, runs_root: str, console: Console, command: str
) -> RunTracking:
    """TensorBoard (the ``--logdir`` line to run is printed) and, when configured, the MLflow parent
    run of this command; a tracker that does not answer is a printed warning, never a failure."""
    from organseg import __version__
    from organseg.ensemble.spec import FORMAT_VERSION
    from organseg.train.tracking import dataset_fingerprint, git_commit

    tags = {
        "organseg.command": command,
        "organseg.model": config.name,
        "organseg.version": __version__,
        "organseg.model_format": str(FORMAT_VERSION),
        "organseg.dataset_fingerprint": dataset_fingerprint(
            (s.id for s in data.cache.samples), config.preprocess.model_dump(mode="json")
        ),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    settings = config.tracking

    def warn(message: str) -> None:
        console.print(f"  [yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    tracking = RunTracking.start(
        runs_root=runs_root,
        tensorboard=settings.tensorboard,
        mlflow_uri=settings.mlflow_uri,
        experiment=settings.experiment or config.name,
        run_name=config.name if command == "train" else f"{config.name}-{command}",
        tags=tags,
        warn=warn,
    )
    if settings.tensorboard:
        console.print(
            f"  watch it: {tracking.tensorboard_command()}", highlight=False, soft_wrap=True
        )
    if tracking.on:
        console.print(
            f"  MLflow: experiment {settings.experiment or config.name!r}, run "
            f"{tracking.parent_url() or tracking.parent_id}",
            highlight=False,
            soft_wrap=True,
        )
    return tracking


def _finish_tracking(
    tracking: RunTracking,
    outcomes: list[MemberOutcome],
    model_dir: Path | None,
    curves: Path | None,
) -> None:
    """Each member's ``member.json`` on its child run; learning curves and ``ensemble.yaml`` on the
    parent; every run closed with how it ended."""
    import tempfile

    from organseg.ensemble.spec import SPEC_FILE
    from organseg.ensemble.version import model_version

    tags = {"organseg.model_version": model_version(model_dir).id} if model_dir else {}
    with tempfile.TemporaryDirectory() as folder:
        for outcome in outcomes:
            artifacts = []
            if outcome.ok and outcome.checkpoint:
                source = storage.join(outcome.checkpoint, MEMBER_FILE)
                if storage.exists(source):
                    local = Path(folder, outcome.name, MEMBER_FILE)
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text(storage.read_text(source))
                    artifacts.append(local)
            tracking.finish_child(outcome.name, outcome.ok, artifacts, tags if outcome.ok else None)
    parent_artifacts = [
        p for p in (curves, model_dir and model_dir / SPEC_FILE) if p and p.exists()
    ]
    tracking.finish(all(o.ok for o in outcomes), parent_artifacts, tags)


def _train_modality_classifier(data: PreparedData, model_dir: Path) -> ModalityClassifier | None:
    """Validate the modality classifier by patient-grouped cross-validation over all the cache's
    series, fit it on all of them and list it in ensemble.yaml; None when the data hold a single
    modality. The members' train/validation split is not used: it holds out too few patients per
    modality to validate four of them."""
    classifier = fit_from_cache(data.cache.samples)
    if classifier is None:
        return None
    path = classifier.save(model_dir)
    held = classifier.held_out
    entry = ClassifierEntry(
        file=path.name,
        held_out_accuracy=held.accuracy if held and held.series else None,
        held_out_series={c: n for c, (_, n) in held.per_class.items()} if held else {},
        held_out_accuracy_per_class=held.accuracy_per_class if held else {},
        validation=held.method if held else None,
        folds=held.folds if held else None,
        patients=held.patients if held else None,
    )
    spec = load_spec(model_dir)
    save_spec(spec.model_copy(update={"modality_classifier": entry}), model_dir)
    return classifier


def _check_resources(
    config: ExperimentConfig,
    members: list[MemberConfig],
    console: Console,
    progress: ProgressView | None,
    autoscaling: bool | None,
    timeout_s: float,
) -> dict[str, str]:
    """Fail now for members that can never be placed; wait (showing what is missing) where an autoscaler
    may add nodes. Returns the members that fit the cluster but not beside the others, with why.

    While waiting, ``progress`` shows one row per member saying what it lacks (on a terminal); otherwise
    each change is one console line.
    """
    requests = [member_request(config, m) for m in members]
    title = f"{config.name}: waiting for resources (up to {timeout_s:g} s)"
    rows: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}
    live = progress is not None and console.is_terminal

    def on_wait(missing: dict[str, str]) -> None:
        rows.update(
            {
                m.name: {
                    "status": f"waiting for resources: {missing[m.name]}"
                    if m.name in missing
                    else "placeable",
                    "epochs": m.epochs,
                }
                for m in members
            }
        )
        if not live and missing != shown:
            shown.clear()
            shown.update(missing)
            for name, why in sorted(missing.items()):
                console.print(f"  [yellow]waiting for resources[/] {name}: {why}", highlight=False)

    def decide() -> Any:
        return settle(
            requests,
            what=f"{len(requests)} member(s) of {config.name}",
            advice=member_advice,
            read=cluster_resources,
            autoscaling=autoscaler_present() if autoscaling is None else autoscaling,
            timeout_s=timeout_s,
            on_wait=on_wait,
        )

    if live and progress is not None:  # the view draws while the wait runs beside it
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resources") as pool:
            waiting = pool.submit(decide)
            progress(lambda: dict(rows), waiting.done, title)
            verdict = waiting.result()
    else:
        verdict = decide()
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
    to_run: list[tuple[MemberPlan, str]],
    board: Any,
    progress: ProgressView | None,
    queued: dict[str, str] | None = None,
    tracking: RunTracking | None = None,
) -> list[MemberOutcome]:
    queued = queued or {}

    def payload(plan: MemberPlan) -> TrainPayload:
        payload = member_payload(config, plan, data, run_root)
        if tracking is not None:
            params = plan.member.model_dump(mode="json", exclude={"fault"})
            tags = {"organseg.member": plan.name}
            run_dir = storage.join(run_root, plan.name)
            tracking.child(plan.name, run_dir, params, tags).attach(payload.extra)
        return payload

    pool = ThreadPoolExecutor(max_workers=len(to_run), thread_name_prefix="member")
    futures: list[Future[MemberOutcome]] = [
        pool.submit(
            _fit_member,
            plan.member,
            payload(plan),
            run_root,
            board,
            f"waiting for resources: {queued[plan.name]}" if plan.name in queued else "starting",
        )
        for plan, _ in to_run
    ]

    def snapshot() -> dict[str, Any]:
        try:
            return ray.get(board.snapshot.remote(), timeout=10)
        except Exception:  # a missed refresh only delays the view
            return {}

    try:
        if progress is not None:
            title = f"{config.name}: {len(to_run)} member(s) training in parallel"
            progress(snapshot, lambda: all(f.done() for f in futures), title)
        results = [f.result() for f in futures]
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
