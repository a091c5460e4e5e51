"""`organseg predict`: segment a volume with a model directory in-process, or through a served endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from organseg.errors import OrgansegError


def predict_command(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="NIfTI/MHA file, DICOM series folder or CHAOS case."
    ),
    out: Path = typer.Option(
        ..., "--output", "-o", help="Output file (.nii.gz, .mha, .dcm) or PNG-series folder."
    ),
    local: Path | None = typer.Option(None, "--local", help="Model directory to run in-process."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Served HTTP endpoint, e.g. http://127.0.0.1:8000"
    ),
    grpc_target: str | None = typer.Option(
        None, "--grpc", help="Served gRPC endpoint, e.g. 127.0.0.1:9000"
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="CT, MR-T1-in, MR-T1-out or MR-T2SPIR."
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="auto (by OUTPUT's name), nifti, png or dicom-seg."
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write the prediction's metadata as JSON here."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    overlay: Path | None = typer.Option(
        None, "--overlay", help="Also write overlay PNGs (slices + montage.png) into this folder."
    ),
    device: str | None = typer.Option(
        None, "--device", help="torch device for --local (default: cuda if present)."
    ),
    timeout: float = typer.Option(
        300.0, "--timeout", help="Seconds to wait for a served endpoint."
    ),
) -> None:
    """Segment INPUT and write the label map; --report adds modality, members, organ volumes, uncertainty."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from organseg.cli._console import console, err_console
    from organseg.io.outputs import write_labels

    chosen = [x for x in (local, endpoint, grpc_target) if x]
    if len(chosen) != 1:
        raise OrgansegError(
            "choose exactly one of --local MODEL_DIR, --endpoint URL or --grpc HOST:PORT"
        )
    backend = _backend(local, endpoint, grpc_target, device, timeout)
    inputs = backend.inputs(input_path, modality)
    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        for item in inputs:
            task = progress.add_task(f"segmenting {item.name} ({backend.describe()})", total=None)
            prediction = backend.predict(item, modality)
            target = out if len(inputs) == 1 else out / item.name
            if len(inputs) > 1 and target.suffix == "" and fmt in ("auto", "nifti"):
                target = out / f"{item.name}.nii.gz"
            source_dicom = (
                Path(item.image.meta["source"])
                if item.image.meta.get("SeriesInstanceUID")
                else None
            )
            written = write_labels(
                prediction.labels, target, fmt, source_dicom=source_dicom, overwrite=overwrite
            )
            if overlay is not None:
                from organseg.viz import render_overlays

                folder = overlay if len(inputs) == 1 else overlay / item.name
                render_overlays(item.image, prediction.labels, out_dir=folder)
            progress.remove_task(task)
            entry = {
                "input": item.name,
                "output": str(written[0] if len(written) == 1 else target),
                **prediction.report(),
            }
            results.append(entry)
            volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in prediction.volumes_ml.items())
            console.print(
                f"{item.name}: {prediction.modality.value} ({prediction.modality_reason}) → {entry['output']}; "
                f"{volumes}; members {', '.join(prediction.members)}",
                highlight=False,
                soft_wrap=True,
            )
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        payload = results[0] if len(results) == 1 else {"results": results}
        report.write_text(json.dumps(payload, indent=2))
        console.print(f"report: {report}")


def _backend(
    local: Path | None,
    endpoint: str | None,
    grpc_target: str | None,
    device: str | None,
    timeout: float,
):
    if local is not None:
        from organseg.ensemble.backends import LocalBackend

        return LocalBackend(local, device)
    if endpoint is not None:
        from organseg.serve.client import HttpBackend

        return HttpBackend(endpoint, timeout)
    from organseg.serve.client import GrpcBackend

    return GrpcBackend(grpc_target, timeout)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
