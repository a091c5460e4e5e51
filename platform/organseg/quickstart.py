"""``organseg quickstart``: the whole product on a laptop in minutes.

Synthesize a CHAOS-layout dataset (CT and MR) → train a small ensemble with its members in parallel (Ray
Train) → score it with the CHAOS metrics on held-out cases → start the Serve graph → segment a CT and an MR
volume over HTTP and gRPC → write masks, overlays and reports → shut everything down. Re-running reuses
the work directory (finished members are not retrained); ``clean`` starts over.

``data`` replaces the synthetic data with a dataset: a CHAOS folder (the CHAOS task its modalities
fit), or an nnU-Net v2 / MSD dataset, trained on its own label set with members that take its
channels' modalities and scored per label (Dice, HD95, ASSD, RAVD, NSD) on its validation cases.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from organseg.config import ExperimentConfig, dump_config, load_config, parse_config, read_yaml
from organseg.errors import ConfigError, DataError, RunError
from organseg.io import discover_cases, load_case
from organseg.io.volume import Modality
from organseg.shipped import experiment_config, serve_profile
from organseg.tasks import get_task

DEFAULT_CONFIG = experiment_config("quickstart")
DEFAULT_SERVE_CONFIG = serve_profile("local")
SERVED_MODALITIES = (Modality.CT, Modality.MR_T2SPIR)


@dataclass
class QuickstartOptions:
    workdir: Path = Path("organseg-quickstart")
    data: Path | None = None
    config: Path = DEFAULT_CONFIG
    serve_config: Path = DEFAULT_SERVE_CONFIG
    clean: bool = False
    epochs: int | None = None
    size: int | None = None
    cases: int | None = None  # synthetic patients per modality for training
    http_port: int = 8000
    grpc_port: int = 9000
    address: str | None = None


@dataclass
class QuickstartResult:
    workdir: Path
    model_dir: Path
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


class Steps:
    """Numbered, timed progress lines."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.index, self.started = console, total, 0, time.perf_counter()

    def __call__(self, title: str) -> None:
        self.index += 1
        elapsed = time.perf_counter() - self.started
        self.console.rule(f"[bold]{self.index}/{self.total} {title}[/]  [dim]{elapsed:.0f} s[/]")


def data_format(path: Path) -> str:
    """``nnunet``, ``msd`` or ``chaos`` for ``--data``, or a DataError saying what the folder is not."""
    from organseg.datasets import detect_format

    if not path.is_dir():
        raise DataError(f"{path}: not a folder (--data)")
    found = detect_format(path)
    if found is None:
        raise DataError(
            f"{path}: --data takes a CHAOS folder (Train_Sets/CT, MR) or an nnU-Net v2 / MSD dataset "
            "(dataset.json), and this is neither"
        )
    return found[0]


def experiment(options: QuickstartOptions) -> ExperimentConfig:
    """The quickstart config pointed at the work directory (and at real data with ``data``)."""
    if not options.config.is_file():
        raise ConfigError(f"{options.config}: quickstart config not found")
    if options.data is not None:
        format = data_format(options.data)
        if format != "chaos":
            return _dataset_experiment(options, format)
    config = load_config(options.config)
    workdir = options.workdir.resolve()
    config.storage_path = str(workdir / "runs")
    config.output = workdir / "model"
    config.dataset.cache_dir = workdir / "cache"
    if options.size is not None:
        config.preprocess = config.preprocess.model_copy(update={"size": options.size})
    synthetic = config.dataset.synthetic
    # the quickstart writes its synthetic data itself (training + held-out), so the run reads a folder
    if options.data is not None or synthetic is not None:
        folder = options.data.resolve() if options.data is not None else workdir / "data"
        config.dataset = config.dataset.model_copy(update={"path": folder, "synthetic": None})
    members = []
    for member in config.members:
        update: dict[str, Any] = {}
        if options.epochs is not None:
            update["epochs"] = options.epochs
        members.append(member.model_copy(update=update))
    config.members = members
    return config


def _dataset_experiment(options: QuickstartOptions, format: str) -> ExperimentConfig:
    """The quickstart's members on an nnU-Net/MSD dataset: its label set (no CHAOS task), its split,
    and members that take its channels' modalities — all its channels as one input (``in_channels``)
    when the dataset stacks them (``dataset.channels``, as training resolves it). A dataset the
    members cannot use (a channel of no established modality, region-based labels, a broken
    ``dataset.json``) is one DataError naming the key, before anything trains."""
    from organseg.datasets.refs import case_modalities, stacks_channels
    from organseg.train.data import open_labelled_dataset

    assert options.data is not None
    raw = read_yaml(options.config, "quickstart config")
    workdir = options.workdir.resolve()
    raw.pop("task", None)  # the dataset brings its labels
    dataset = {k: v for k, v in raw.get("dataset", {}).items() if k not in ("synthetic", "path")}
    raw["dataset"] = {
        **dataset,
        "path": str(options.data.resolve()),
        "format": format,
        "cache_dir": str(workdir / "cache"),
    }
    raw["storage_path"] = str(workdir / "runs")
    raw["output"] = str(workdir / "model")
    if options.size is not None:
        raw["preprocess"] = {**raw.get("preprocess", {}), "size": options.size}
    members = []
    for member in raw.get("members", []):
        member = {k: v for k, v in member.items() if k != "modalities"}  # the dataset's, below
        if options.epochs is not None:
            member["epochs"] = options.epochs
        members.append(member)
    raw["members"] = members
    config = parse_config(raw, source=str(options.config))
    labelled = open_labelled_dataset(config, deep=False)
    if stacks_channels(labelled, config.dataset.channels):
        # one sample per case holding every channel; its modalities are left to the data, as the
        # config allows for stacked channels (organseg.train.data: the first channel's)
        count = len(labelled.channel_names)
        config.members = [m.model_copy(update={"in_channels": count}) for m in config.members]
        return config
    stacked = config.preprocess.t1_mode == "stack"
    every = dict.fromkeys(m for case in case_modalities(labelled).values() for m in case)
    modalities = [  # out-phase is the in-phase sample's second channel when stacked
        m for m in Modality if m in every and not (stacked and m is Modality.MR_T1_OUT)
    ]
    config.members = [m.model_copy(update={"modalities": modalities}) for m in config.members]
    return config


def _check_dataset(config: ExperimentConfig, console: Console) -> None:
    """Read the whole dataset before training (every problem, by file and key) and say what it holds."""
    from organseg.datasets.refs import case_modalities
    from organseg.train.data import open_labelled_dataset

    dataset = open_labelled_dataset(config, deep=True)
    assert dataset.label_set is not None
    labels = [lb.name for lb in dataset.label_set]
    channels = list(dataset.channel_names)
    if len(channels) > 1 and all(m.in_channels == len(channels) for m in config.members):
        firsts = sorted({case[0].value for case in case_modalities(dataset).values()})
        takes = f"members take all {len(channels)} channels as one input ({', '.join(firsts)})"
    else:
        modalities = {m.value for member in config.members for m in member.modalities or []}
        takes = f"members take {', '.join(sorted(modalities))}"
    ignore = (
        f"; ignore label {dataset.label_set.ignore} left out of loss and metrics"
        if dataset.label_set.ignore is not None
        else ""
    )
    console.print(
        f"  {dataset.root}: {dataset.format} dataset of {len(dataset.cases)} case(s), channels "
        f"{channels} → {takes}; {len(labels)} labels: "
        f"{', '.join(labels)}{ignore}",
        highlight=False,
        soft_wrap=True,
    )


def _synthesize(options: QuickstartOptions, console: Console) -> tuple[Path, Path]:
    """Training data and separately seeded held-out patients (reused when already there)."""
    from organseg.synth import write_dataset

    base = load_config(options.config).dataset.synthetic
    if base is None:
        raise ConfigError(f"{options.config}: the quickstart config needs dataset.synthetic")
    cases = options.cases or max(base.ct, base.mr)
    size = base.size if options.size is None else max(base.size, options.size)
    train_root, heldout_root = options.workdir / "data", options.workdir / "heldout"
    for root, n, seed, what in (
        (train_root, cases, base.seed, "training"),
        (heldout_root, 1, base.seed + 1000, "held-out"),
    ):
        if (root / "Train_Sets").is_dir():
            console.print(f"  reusing {what} data in {root}", highlight=False, soft_wrap=True)
            continue
        write_dataset(root, ct=n, mr=n, size=size, slices=base.slices, seed=seed, overwrite=True)
        console.print(
            f"  wrote {n} CT + {n} MR synthetic {what} patients ({size}²) to {root}",
            highlight=False,
            soft_wrap=True,
        )
    return train_root, heldout_root


def _restrict_to_data(config: ExperimentConfig, root: Path, console: Console) -> None:
    """On real data, members accept only the modalities the folder actually holds."""
    present = {r.modality for r in discover_cases(root) if r.mask_dir is not None}
    if not present:
        raise DataError(f"{root}: no labelled CHAOS cases found")
    kept = []
    for member in config.members:
        modalities = [m for m in member.modalities or [] if m in present]
        if modalities:
            kept.append(member.model_copy(update={"modalities": modalities}))
    if not kept:
        raise DataError(
            f"{root}: holds {sorted(m.value for m in present)}, which no quickstart member takes"
        )
    config.members = kept
    config.task = _task_for(present, config.task)
    console.print(
        f"  {root} holds {', '.join(sorted(m.value for m in present))}: CHAOS task {config.task} "
        f"({get_task(config.task).title})",
        highlight=False,
        soft_wrap=True,
    )


def _task_for(present: set[Modality], task: int) -> int:
    """The CHAOS task for the modalities a folder holds, with the quickstart's organs (liver):
    CT only is task 2, MR only task 3, both task 1; an all-organ config keeps its organs (4/5)."""
    has_ct, has_mr = Modality.CT in present, any(m.is_mr for m in present)
    all_organs = len(get_task(task).organs) > 1
    if has_ct and has_mr:
        return 4 if all_organs else 1
    if has_ct:
        return 2  # CHAOS CT is annotated for the liver only
    return 5 if all_organs else 3


def _evaluate(
    model_dir: Path,
    heldout: list[Any],
    console: Console,
    title: str = "CHAOS metrics on held-out patients",
) -> list[dict[str, Any]]:
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.metrics.chaos import evaluate_masks

    predictor = EnsemblePredictor(model_dir)
    rows = []
    for case in heldout:
        prediction = predictor.predict(case.image, case.modality.value)
        metrics = evaluate_masks(
            case.label.array, prediction.labels.array, case.image.geometry, prediction.organs
        )
        for organ, m in metrics.items():
            rows.append(
                {
                    "case": case.case_id,
                    "modality": case.modality.value,
                    "organ": organ,
                    **m.to_dict(),
                }
            )
    table = Table(title=title)
    for column in ("case", "organ", "DICE", "RAVD %", "ASSD mm", "MSSD mm", "score"):
        table.add_column(column, justify="left" if column in ("case", "organ") else "right")

    def num(value: Any, spec: str) -> str:
        return "inf" if value is None else format(value, spec)

    for r in rows:
        table.add_row(r["case"], r["organ"], num(r["dice"], ".3f"), num(r["ravd"], ".2f"), num(r["assd"], ".2f"),
                      num(r["mssd"], ".2f"), num(r["score"], ".1f"))  # fmt: skip
    console.print(table)
    return rows


def _serve_schema(options: QuickstartOptions, model_dir: Path):
    """The local Serve profile for this model directory. The profile also tunes deployments a model
    may lack (MR members of a CT-only model); here that is expected, not worth a warning."""
    import warnings

    from organseg.serve.runner import load_serve_config

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = load_serve_config(
            options.serve_config, model_dir, options.http_port, options.grpc_port, host="127.0.0.1"
        )
    for warning in caught:
        if "Serve config settings for" not in str(warning.message):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return schema


def _serve_and_segment(
    options: QuickstartOptions,
    model_dir: Path,
    heldout: list[Any],
    console: Console,
    own_cluster: bool = False,
) -> list[dict[str, Any]]:
    """Deploy the graph from the local Serve profile, send each held-out volume over HTTP and gRPC
    (raw voxels of a dataset's case carry the modality its channel name states)."""
    from organseg.ensemble.inputs import PredictInput
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io.files import write_volume_file
    from organseg.serve.client import GrpcBackend, HttpBackend
    from organseg.serve.runner import deploy, shutdown
    from organseg.viz import prediction_flags, render_overlays

    schema = _serve_schema(options, model_dir)
    console.print(
        f"  deploying router → ensembles → members (HTTP :{options.http_port}, gRPC :{options.grpc_port})"
    )
    deploy(schema)
    local = EnsemblePredictor(model_dir)
    label_set = local.spec.label_set() if local.spec.labels is not None else None
    model_channels = local.spec.preprocess.channels or ()
    served = []
    try:
        backends = {
            "http": HttpBackend(f"http://127.0.0.1:{options.http_port}", 300),
            "grpc": GrpcBackend(f"127.0.0.1:{options.grpc_port}", 300),
        }
        for case in heldout:
            channels = named_channels(case, model_channels)
            expected = local.predict(case.image, case.modality.value, channels=channels)
            expected = expected.labels.array
            # DICOM states its modality in its headers; a dataset's volume by its channel's name
            # (dataset.json), which the request then states; stacked channels each by their name
            stated = case.modality.value if label_set is not None else None
            item = PredictInput(case.case_id, case.image, channels=channels)
            for transport, backend in backends.items():
                started = time.perf_counter()
                prediction = backend.predict(item, stated)
                seconds = time.perf_counter() - started
                stem = f"{case.case_id.replace('/', '_')}_{transport}"
                mask = write_volume_file(
                    prediction.labels, options.workdir / "predictions" / f"{stem}.nii.gz"
                )
                overlay_dir = options.workdir / "overlays" / stem
                shutil.rmtree(overlay_dir, ignore_errors=True)
                overlays = render_overlays(
                    case.image,
                    prediction.labels,
                    case.label,
                    out_dir=overlay_dir,
                    organs=prediction.organs,
                    case_id=case.case_id,
                    flags=prediction_flags(prediction.volumes_ml, prediction.uncertainty),
                    label_set=label_set,
                )
                report = {"case": case.case_id, "transport": transport, "seconds": round(seconds, 3),
                          "identical_to_in_process": bool(np.array_equal(prediction.labels.array, expected)),
                          "mask": str(mask), "overlay": str(overlays[-1]), **prediction.report()}  # fmt: skip
                if label_set is not None:  # the values the mask holds, as the answers name them
                    report["label_values"] = {lb.name: lb.value for lb in label_set}
                (options.workdir / "predictions" / f"{stem}.json").write_text(
                    json.dumps(report, indent=2)
                )
                served.append(report)
                volumes = (
                    ", ".join(  # in the label set's order (a gRPC answer's map has none)
                        f"{name} {prediction.volumes_ml.get(name, 0):.0f} mL"
                        for name in label_set.names
                    )
                    if label_set is not None
                    else f"liver {prediction.volumes_ml.get('liver', 0):.0f} mL"
                )
                console.print(
                    f"  {transport:4s} {case.case_id}: routed to {prediction.modality.value} "
                    f"({prediction.modality_reason}); {volumes}; "
                    f"{seconds:.2f} s; same mask as in-process: {report['identical_to_in_process']}",
                    highlight=False,
                    soft_wrap=True,
                )
    finally:
        if not own_cluster:
            shutdown()
        # On a local cluster this command started, Ray's shutdown ends Serve with it. serve.shutdown()
        # there would only add a yellow "(raylet) Task ServeController.graceful_shutdown failed ...
        # killed by ray.kill" line: the controller kills itself while the driver's call is pending.
    return served


def run_quickstart(options: QuickstartOptions, console: Console | None = None) -> QuickstartResult:
    """Run every stage; returns where everything went."""
    from organseg.runtime import ray_session, starts_local_cluster
    from organseg.train.launcher import train_experiment
    from organseg.viz.progress import LiveProgress

    console = console or Console(stderr=True)
    started = time.perf_counter()
    steps = Steps(console, 5)
    if options.clean and options.workdir.exists():
        shutil.rmtree(options.workdir)
    options.workdir.mkdir(parents=True, exist_ok=True)
    options.workdir = options.workdir.resolve()
    config = experiment(options)
    labelled = config.dataset.own_labels  # an nnU-Net/MSD dataset: its own label set

    steps("data")
    heldout_refs = None  # with --data: decided after the split (the validation patients)
    if labelled:
        _check_dataset(config, console)
    elif options.data is None:
        train_root, heldout_root = _synthesize(options, console)
        config.dataset.path = train_root.resolve()
        heldout_refs = [r for r in discover_cases(heldout_root) if r.modality in SERVED_MODALITIES]
    else:
        if not options.data.is_dir():
            raise DataError(f"{options.data}: not a folder")
        _restrict_to_data(config, options.data, console)
    (options.workdir / "experiment.yaml").write_text(dump_config(config))

    own_cluster = starts_local_cluster(options.address)
    with ray_session(options.address):
        steps("training the ensemble (members in parallel, Ray Train)")
        report = train_experiment(
            config,
            console=console,
            progress=LiveProgress(console),
            restart_hint="pass --clean",
        )
        for outcome in report.outcomes:
            note = (
                f"best val Dice {outcome.best_val_dice:.3f}"
                if outcome.best_val_dice is not None
                else outcome.error
            )
            console.print(f"  {outcome.name}: {outcome.status} ({note})", highlight=False)
        if report.model_dir is None or not report.ok:
            raise RunError("quickstart: training failed; see the member outcomes above")

        if labelled:
            steps("evaluating per label (Dice, HD95, ASSD, RAVD, NSD)")
            heldout, label_files, independent = _labelled_heldout(config, console)
            evaluation = _evaluate_labels(
                report.model_dir,
                heldout,
                label_files,
                options.workdir / "evaluation",
                console,
                "Per-label metrics on the validation cases"
                if independent
                else "Per-label metrics on the training case",
            )
            steps("serving: router → ensembles → members, over HTTP and gRPC")
            to_send = _one_per_modality(heldout, None)
            served = _serve_and_segment(options, report.model_dir, to_send, console, own_cluster)
        else:
            evaluation, served = _chaos_evaluate_and_serve(
                options, config, report.model_dir, heldout_refs, steps, console, own_cluster
            )

    steps("done")
    (options.workdir / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    result = QuickstartResult(
        workdir=options.workdir,
        model_dir=report.model_dir,
        evaluation=evaluation,
        served=served,
        outputs={
            "model directory": report.model_dir,
            "learning curves": report.curves_png or report.model_dir,
            "evaluation (JSON)": options.workdir / "evaluation.json",
            **({"scored label maps": options.workdir / "evaluation"} if labelled else {}),
            "predicted masks + reports": options.workdir / "predictions",
            "overlay PNGs": options.workdir / "overlays",
            "experiment config used": options.workdir / "experiment.yaml",
        },
        seconds=time.perf_counter() - started,
    )
    # One line per output, never wrapped by us: a terminal breaks a long path where it must, and a
    # path copied from the log stays whole (a table column would fold it mid-word).
    console.print(
        f"[bold]organseg quickstart finished in {result.seconds / 60:.1f} min[/]", highlight=False
    )
    if labelled:
        _print_label_summary(evaluation, console)
    width = max(len(what) for what in result.outputs)
    for what, where in result.outputs.items():
        console.print(f"  {what:<{width}}  {where}", highlight=False, soft_wrap=True)
    return result


def _chaos_evaluate_and_serve(
    options: QuickstartOptions,
    config: ExperimentConfig,
    model_dir: Path,
    heldout_refs: list[Any] | None,
    steps: Steps,
    console: Console,
    own_cluster: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """CHAOS data: the CHAOS scores on the held-out (or validation) patients, then one CT and one MR
    volume served."""
    steps("evaluating with the CHAOS metrics")
    title = "CHAOS metrics on held-out synthetic patients"
    if heldout_refs is None:
        heldout_refs, independent = _heldout_from_split(config, console)
        title = (
            "CHAOS metrics on the validation patients"
            if independent
            else "CHAOS metrics on the training patient"
        )
    heldout = [load_case(r) for r in heldout_refs]
    heldout = [c for c in heldout if c.label is not None]
    evaluation = _evaluate(model_dir, heldout, console, title)

    steps("serving: router → ensembles → members, over HTTP and gRPC")
    to_send = _one_per_modality(heldout)
    served = _serve_and_segment(options, model_dir, to_send, console, own_cluster)
    return evaluation, served


def _one_per_modality(
    cases: list[Any], served: tuple[Modality, ...] | None = SERVED_MODALITIES
) -> list[Any]:
    """The first case of each modality (of ``served``; None: of every modality)."""
    chosen: dict[Modality, Any] = {}
    for case in cases:
        if served is None or case.modality in served:
            chosen.setdefault(case.modality, case)
    return list(chosen.values())


def _heldout_from_split(config: ExperimentConfig, console: Console) -> tuple[list[Any], bool]:
    """With real data, the validation patients are scored; False when they were also trained on
    (a single patient), so nothing calls them held-out."""
    import warnings

    from organseg.train.data import prepare_data

    with warnings.catch_warnings():  # training already said so once
        warnings.simplefilter("ignore")
        data = prepare_data(config)
    val_patients = {s.patient for s in data.cache.samples if s.id in data.val_ids}
    train_patients = {s.patient for s in data.cache.samples if s.id in data.train_ids}
    refs = [
        r
        for r in discover_cases(config.dataset.path)
        if r.mask_dir is not None and r.patient in val_patients
    ]
    independent = not (val_patients & train_patients)
    if not independent:
        console.print(
            "  one patient only: it is scored on the same slices training saw, so this is no "
            "held-out score",
            highlight=False,
            soft_wrap=True,
        )
    served = {m for member in config.members for m in member.modalities or []}
    return [r for r in refs if r.modality in served], independent


def _labelled_heldout(
    config: ExperimentConfig, console: Console
) -> tuple[list[Any], dict[str, Path], bool]:
    """The validation cases of a dataset with its own labels (its ``splits_final.json`` fold, else
    ``val_fraction``), one loaded channel each (all channels when stacked), with their label files;
    False when they were also trained on (one case)."""
    import warnings

    from organseg.datasets.refs import dataset_refs, load_ref
    from organseg.train.data import open_labelled_dataset, prepare_data

    with warnings.catch_warnings():  # training already said so once
        warnings.simplefilter("ignore")
        data = prepare_data(config)
    val_patients = {s.patient for s in data.cache.samples if s.id in data.val_ids}
    train_patients = {s.patient for s in data.cache.samples if s.id in data.train_ids}
    served = {m for member in config.members for m in member.modalities or []}
    stack = config.preprocess.channels is not None  # as prepare_data resolved it
    refs = [
        r
        for r in dataset_refs(open_labelled_dataset(config, deep=False), stack=stack)
        if r.patient in val_patients and r.modality in served and r.case.label is not None
    ]
    label_files = {r.case_id: r.case.label for r in refs if r.case.label is not None}
    independent = not (val_patients & train_patients)
    if not independent:
        console.print(
            "  one case only: it is scored on the slices training saw, so this is no held-out score",
            highlight=False,
            soft_wrap=True,
        )
    return [load_ref(r) for r in refs], label_files, independent


def named_channels(case: Any, model_channels: Any) -> dict[str, Any] | None:
    """A stacked case's channels by the model's channel names (both in dataset.json order), as
    predict and the served requests take them; None for a case of one channel (and CHAOS cases)."""
    if not getattr(case, "channels", ()):
        return None
    return {c.name: v for c, v in zip(model_channels, case.channels, strict=True)}


def _evaluate_labels(
    model_dir: Path,
    heldout: list[Any],
    label_files: dict[str, Path],
    out_dir: Path,
    console: Console,
    title: str,
) -> list[dict[str, Any]]:
    """Predict each case in-process, write its label map where ``organseg evaluate`` reads it back,
    and score it per label against the dataset's label file (the ignore label left out)."""
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io.files import write_volume_file
    from organseg.metrics.labelset_eval import evaluate_label_files

    predictor = EnsemblePredictor(model_dir)
    label_set = predictor.spec.label_set()
    model_channels = predictor.spec.preprocess.channels or ()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in heldout:
        channels = named_channels(case, model_channels)
        prediction = predictor.predict(case.image, case.modality.value, channels=channels)
        path = write_volume_file(
            prediction.labels, out_dir / f"{case.case_id.replace('/', '_')}.nii.gz"
        )
        metrics = evaluate_label_files(label_files[case.case_id], path, label_set)
        for name, m in metrics.items():
            rows.append(
                {
                    "case": case.case_id,
                    "modality": case.modality.value,
                    "label": name,
                    **m.to_dict(),
                }
            )
    table = Table(title=title)
    for column in ("case", "label", "Dice", "HD95 mm", "ASSD mm", "RAVD %", "NSD"):
        table.add_column(column, justify="left" if column in ("case", "label") else "right")

    def num(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        table.add_row(r["case"], r["label"], num(r["dice"], ".3f"), num(r["hd95"], ".2f"),
                      num(r["assd"], ".2f"), num(r["ravd"], ".1f"), num(r["nsd"], ".3f"))  # fmt: skip
    console.print(table)
    return rows


def _print_label_summary(evaluation: list[dict[str, Any]], console: Console) -> None:
    """The label set and each label's mean Dice over the scored cases, in the set's order."""
    by_label: dict[str, list[float]] = {}
    for row in evaluation:
        by_label.setdefault(row["label"], []).append(row["dice"])
    dice = ", ".join(f"{name} {sum(v) / len(v):.2f}" for name, v in by_label.items())
    console.print(f"  labels ({len(by_label)}), mean Dice: {dice}", highlight=False, soft_wrap=True)
