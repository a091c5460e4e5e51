"""`organseg predict`: segment a volume with a model directory in-process, or through a served endpoint.

Order of work, so a mistake costs nothing: settle every output path (label maps, overlays, report)
and refuse to replace any without ``--overwrite``; ask the backend which modalities it serves and set
aside the series it cannot take; only then read and segment. Several series go to a folder in the
CHAOS layout that ``organseg evaluate`` reads in dataset mode. Exit code 0: everything written;
1: written, but some series were skipped (listed with the reason); 2: an error, nothing more written.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from organseg.cli._gate import (
    gate_policy,
    min_accuracy_option,
    min_accuracy_per_modality_option,
    min_confidence_option,
    min_series_option,
)
from organseg.errors import OrgansegError
from organseg.io.atomic import write_text_atomic

if TYPE_CHECKING:  # heavy imports stay inside the command, so `organseg --help` stays instant
    from organseg.ensemble.inputs import InputPlan
    from organseg.io.outputs import OutputTarget

EXIT_SKIPPED = 1


def predict_command(
    input_path: Path | None = typer.Argument(
        None, metavar="INPUT", help="NIfTI/MHA file, DICOM series folder, CHAOS case or dataset."
    ),
    out: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file (.nii.gz, .mha, .nrrd, .dcm) or PNG-series folder; for a CHAOS dataset "
        "or several series a folder that receives them in the CHAOS layout (CT/1, MR/2/T2SPIR, "
        "…), which `organseg evaluate` reads. Existing outputs are never replaced without "
        "--overwrite.",
    ),
    local: Path | None = typer.Option(None, "--local", help="Model directory to run in-process."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Served HTTP endpoint, e.g. http://127.0.0.1:8000"
    ),
    grpc_target: str | None = typer.Option(
        None, "--grpc", help="Served gRPC endpoint, e.g. 127.0.0.1:9000"
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="CT, MR-T1-in, MR-T1-out, MR-T2SPIR or MR (a generic MR ensemble)."
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="auto (by OUTPUT's name), nifti, png or dicom-seg."
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write a JSON report here: input, model (directory, version), time, modality, "
        "members, organ volumes, uncertainty, flags.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs (label maps, overlays, report)."
    ),
    overlay: Path | None = typer.Option(
        None, "--overlay", help="Also write overlay PNGs (slices + montage.png) into this folder."
    ),
    device: str | None = typer.Option(
        None, "--device", help="torch device for --local (default: cuda if present)."
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", help="Seconds to wait for a served endpoint."
    ),
    dicomweb: str | None = typer.Option(
        None, "--dicomweb", help="DICOMweb root URL to fetch --study/--series from (WADO-RS)."
    ),
    study: str | None = typer.Option(None, "--study", help="StudyInstanceUID (with --dicomweb)."),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID (with --dicomweb)."
    ),
    stow: bool = typer.Option(
        False, "--stow", help="Store the SEG back by STOW-RS (with --dicomweb)."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="File holding the endpoint's bearer token (default: $ORGANSEG_API_TOKEN).",
    ),
    min_confidence: float | None = min_confidence_option("refused, pass --modality"),
    min_accuracy: float | None = min_accuracy_option(),
    min_series: int | None = min_series_option(),
    min_accuracy_per_modality: float | None = min_accuracy_per_modality_option(),
) -> None:
    """Segment INPUT and write the label map; --report adds modality, members, organ volumes, uncertainty.

    Every output is checked before any work. Exit code 0: all written; 1: written, but some series
    were skipped (listed at the end with the reason); 2: an error.
    """
    from organseg.io.outputs import output_format
    from organseg.serve.connect import BackendChoice, open_backend

    policy = gate_policy(
        min_confidence,
        min_accuracy,
        min_series,
        in_process=local is not None,
        min_accuracy_per_modality=min_accuracy_per_modality,
    )
    choice = BackendChoice(
        local=local,
        endpoint=endpoint,
        grpc_target=grpc_target,
        device=device,
        policy=policy,
        token_file=token_file,
        timeout=timeout,
    )
    if dicomweb is not None or study is not None:
        from organseg.cli.dicomweb import predict_dicomweb_command

        _only_for_files(fmt, overlay, overwrite)
        return predict_dicomweb_command(
            dicomweb, study, series, stow, out, input_path, choice, modality, report
        )
    if series is not None or stow:
        raise OrgansegError("--series and --stow go with --dicomweb URL --study UID")
    if input_path is None or out is None:
        raise OrgansegError("give INPUT and --output (or --dicomweb URL --study UID)")
    choice.check()
    kind = output_format(out, fmt)  # rejects an unknown --format at once
    if kind == "dicom-seg" and input_path.is_file():
        raise OrgansegError(
            f"{input_path}: DICOM-SEG output needs the source DICOM series; INPUT is a volume file "
            "(write .nii.gz, or predict from the DICOM folder)"
        )
    if local is not None:  # settled before the model loads (torch, the weights' hash: seconds)
        plans = _local_plans(local, input_path, modality)
        targets = _settle_outputs(plans, input_path, out, fmt, overlay, report, overwrite)
    backend = open_backend(choice)
    if local is None:  # a served model says how it stacks series; asking it is cheap
        plans = backend.plan(input_path, modality)
        targets = _settle_outputs(plans, input_path, out, fmt, overlay, report, overwrite)

    served = backend.modalities()
    skipped: list[dict[str, str]] = []
    todo = []
    for plan, target in zip(plans, targets, strict=True):
        if plan.modality is not None and plan.modality not in served:
            skipped.append(
                {
                    "case": plan.case_id,
                    "reason": f"{plan.modality.value}: the ensemble serves "
                    f"{', '.join(m.value for m in served)}",
                }
            )
        else:
            todo.append((plan, target))
    if not todo:
        listed = "; ".join(f"{s['case']} ({s['reason']})" for s in skipped)
        raise OrgansegError(f"{input_path}: nothing this ensemble can segment: {listed}")

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    several = len(plans) > 1 or _dataset_folder(input_path)
    results = _run(backend, todo, modality, overwrite, several=several, skipped=skipped)
    if report is not None:
        _write_report(report, input_path, out, backend, started, results, skipped, several)
    _summarize(skipped, results, report)
    if skipped:
        raise typer.Exit(EXIT_SKIPPED)


def _local_plans(model_dir: Path, input_path: Path, modality: str | None) -> list[InputPlan]:
    """What ``--local`` will segment, from ``ensemble.yaml`` alone: the plan of
    ``LocalBackend.plan`` without importing torch or loading the model."""
    from organseg.ensemble.inputs import channel_pairs, plan_inputs
    from organseg.ensemble.spec import load_spec

    shape = load_spec(model_dir).preprocess
    return plan_inputs(
        input_path,
        modality,
        stack_t1=shape.t1_mode == "stack",
        with_t2=shape.t2_channel,
        channels=channel_pairs(shape),
    )


def _settle_outputs(
    plans: list[InputPlan],
    input_path: Path,
    out: Path,
    fmt: str,
    overlay: Path | None,
    report: Path | None,
    overwrite: bool,
) -> list[OutputTarget]:
    """Every output path of the run, each refused if it exists and ``overwrite`` is off."""
    from organseg.io.outputs import check_free, plan_outputs

    targets = plan_outputs(
        out, fmt, [p.case_id for p in plans], overlay, chaos_layout=_dataset_folder(input_path)
    )
    wanted: list[tuple[Path, bool]] = [(t.labels, t.kind == "png") for t in targets]
    wanted += [(t.overlay, True) for t in targets if t.overlay is not None]
    if report is not None:
        wanted.append((report, False))
    check_free(wanted, overwrite)
    return targets


def _run(
    backend: Any,
    todo: list[tuple[InputPlan, OutputTarget]],
    modality: str | None,
    overwrite: bool,
    several: bool,
    skipped: list[dict[str, str]],
) -> list[dict[str, Any]]:
    """Read, segment and write each planned series; in a multi-series run, a series the service or
    the data refuses is skipped with the reason instead of stopping the others."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from organseg.cli._console import console, err_console
    from organseg.ensemble.routing import ModalityError
    from organseg.io.outputs import write_labels
    from organseg.viz import prediction_flags, render_overlays

    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        for plan, target in todo:
            task = progress.add_task(
                f"segmenting {plan.case_id} ({backend.describe()})", total=None
            )
            try:
                item = plan.load()
                prediction = backend.predict(item, modality)
            except ModalityError as exc:
                if not several:
                    raise OrgansegError(exc.cli_message()) from None
                skipped.append({"case": plan.case_id, "reason": exc.cli_message()})
                continue
            except OrgansegError as exc:
                if not several:
                    raise
                skipped.append({"case": plan.case_id, "reason": str(exc)})
                continue
            finally:
                progress.remove_task(task)
            source = item.image.meta.get("source")
            source_dicom = (
                Path(source) if item.image.meta.get("SeriesInstanceUID") and source else None
            )
            written = write_labels(
                prediction.labels,
                target.labels,
                target.kind,
                source_dicom,
                overwrite=overwrite,
                label_set=prediction.label_set,
            )
            flags = prediction_flags(prediction.volumes_ml, prediction.uncertainty)
            entry = {
                "case": plan.case_id,
                "output": str(written[0] if target.kind != "png" else target.labels),
                **prediction.report(),
                "flags": flags,
            }
            if target.overlay is not None:
                paths = render_overlays(
                    item.image,
                    prediction.labels,
                    out_dir=target.overlay,
                    organs=prediction.organs,
                    case_id=plan.case_id,
                    flags=flags,
                    label_set=prediction.label_set,
                )
                entry["overlay"] = str(paths[-1])
            results.append(entry)
            volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in prediction.volumes_ml.items())
            console.print(
                f"{plan.case_id}: {prediction.modality.value} ({prediction.modality_reason}) → "
                f"{entry['output']}; {volumes}; members {', '.join(prediction.members)}",
                highlight=False,
                soft_wrap=True,
            )
            for flag in flags:
                err_console.print(f"[yellow]check:[/] {plan.case_id}: {flag}", highlight=False)
    return results


def _write_report(
    report: Path,
    input_path: Path,
    out: Path,
    backend: Any,
    started: str,
    results: list[dict[str, Any]],
    skipped: list[dict[str, str]],
    several: bool,
) -> None:
    """The JSON report, written atomically: what was segmented with which model, when, and the results."""
    payload: dict[str, Any] = {
        "input": str(input_path.resolve()),
        "output": str(out.resolve()),
        "model": backend.model_info(),
        "started": started,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if several:
        payload.update(results=results, skipped=skipped)
    elif results:
        payload.update(results[0])
    report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report, json.dumps(payload, indent=2) + "\n")


def _summarize(
    skipped: list[dict[str, str]], results: list[dict[str, Any]], report: Path | None
) -> None:
    from organseg.cli._console import console, err_console

    if report is not None:
        console.print(f"report: {report}", highlight=False, soft_wrap=True)
    if skipped:
        err_console.print(
            f"[yellow]skipped {len(skipped)} of {len(skipped) + len(results)} series[/] "
            "(the others were written):",
            highlight=False,
        )
        for s in skipped:
            err_console.print(f"  {s['case']}: {s['reason']}", highlight=False, soft_wrap=True)


def _only_for_files(fmt: str, overlay: Path | None, overwrite: bool) -> None:
    """``--dicomweb`` writes DICOM results into a folder named by series: the options that shape
    file outputs do not apply, and are a usage error rather than silently ignored."""
    given = [
        name
        for name, value in (
            ("--format", fmt != "auto"),
            ("--overlay", overlay),
            ("--overwrite", overwrite),
        )
        if value
    ]
    if given:
        raise OrgansegError(f"{', '.join(given)}: not with --dicomweb (its results are DICOM)")


def _dataset_folder(path: Path) -> bool:
    """A CHAOS dataset, split or modality folder: its series go to the CHAOS layout even when there
    is only one, so ``evaluate`` finds them where it looks (``OUT/CT/1``)."""
    names = ("Train_Sets", "Test_Sets", "CT", "MR")
    return path.is_dir() and (path.name in names or any((path / n).is_dir() for n in names))


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
