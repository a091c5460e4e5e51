"""`organseg evaluate`: CHAOS metrics and scores, per case or for a whole folder of predictions; with a
label set (``--labels dataset.json`` or an nnU-Net/MSD dataset as the reference), per-label Dice, HD95,
ASSD, RAVD and NSD."""

from __future__ import annotations

from pathlib import Path

import typer

#: (header, metric key, decimals): the CHAOS metrics and score, then the seed papers' Table-1 figures.
_CHAOS_COLUMNS = (
    ("DICE", "dice", 3),
    ("RAVD %", "ravd", 3),
    ("ASSD mm", "assd", 3),
    ("MSSD mm", "mssd", 3),
    ("score", "score", 2),
)
_TABLE1_COLUMNS = (
    ("sens.", "sensitivity", 4),
    ("spec.", "specificity", 4),
    ("Jaccard", "jaccard", 4),
    ("|ΔV| mL", "volume_error_ml", 2),
    ("ref mL", "ref_volume_ml", 1),
    ("pred mL", "pred_volume_ml", 1),
)
_EMPTY_NOTES = {
    "both": "both empty",
    "reference": "empty reference",
    "prediction": "empty prediction",
    "missing": "no prediction: score 0",
}


def _fmt(value: float | None, digits: int) -> str:
    if value is None or value != value:  # None or NaN: undefined
        return "–"
    if value in (float("inf"), float("-inf")):
        return "inf"
    return f"{value:.{digits}f}"


def _parse_organs(organs: list[str] | None) -> list[str] | None:
    if not organs:
        return None
    from organseg.organs import organ_ids

    names = [n.strip() for item in organs for n in item.split(",") if n.strip()]
    organ_ids(names)  # rejects unknown names with the valid list
    return names


def _single(
    ref: Path,
    pred: Path,
    dicom: Path | None,
    modality: str | None,
    organs: list[str] | None,
    json_path: Path | None,
    overlay: Path | None = None,
) -> None:
    import json

    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.io.volume import Modality
    from organseg.metrics.chaos import evaluate_masks
    from organseg.metrics.inputs import load_pair

    data = load_pair(ref, pred, dicom=dicom, modality=modality)
    if organs is None and data.modality is Modality.CT:
        organs = ["liver"]  # CHAOS CT masks hold the liver only
    results = evaluate_masks(data.ref_labels, data.pred_labels, data.geometry, organs)
    spacing = ", ".join(f"{s:.7g}" for s in data.geometry.spacing)
    err_console.print(
        f"{pred} vs {ref}: modality {data.modality.value}; geometry from {data.geometry_source} "
        f"(spacing x,y,z {spacing} mm)",
        highlight=False,
    )
    for title, columns in (("CHAOS metrics", _CHAOS_COLUMNS), ("Table-1 figures", _TABLE1_COLUMNS)):
        table = Table(title=title)
        table.add_column("organ", no_wrap=True)
        for header, _, _ in columns:
            table.add_column(header, justify="right", no_wrap=True)
        for organ, metrics in results.items():
            values = metrics.to_dict()
            note = f" ({_EMPTY_NOTES[metrics.empty]})" if metrics.empty else ""
            table.add_row(organ + note, *[_fmt(values[key], d) for _, key, d in columns])
        console.print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {organ: m.to_dict() for organ, m in results.items()}
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        err_console.print(f"wrote {json_path}", highlight=False)
    if overlay is not None:
        written = _write_overlays(data, overlay, list(results))
        err_console.print(f"wrote {len(written)} overlay PNGs to {overlay}", highlight=False)


def _write_overlays(data, overlay: Path, organs: list[str]) -> list[Path]:
    """Prediction filled and reference outlined in each scored organ's colour, over the case's DICOM
    image when the geometry came from one (``--dicom`` or a CHAOS case folder), else on black."""
    from organseg.io.dicom import read_dicom_series
    from organseg.io.volume import Volume
    from organseg.metrics.surface import voxel_volume_ml
    from organseg.organs import ORGAN_LABELS
    from organseg.viz import render_overlays, volume_flags

    source = Path(data.geometry_source)
    image = read_dicom_series(source, data.modality, order="filename") if source.is_dir() else None
    pred = Volume(data.pred_labels, data.geometry, data.modality)
    ref = Volume(data.ref_labels, data.geometry, data.modality)
    voxel_ml = voxel_volume_ml(data.geometry)
    volumes = {o: float((data.pred_labels == ORGAN_LABELS[o]).sum()) * voxel_ml for o in organs}
    return render_overlays(
        image,
        pred,
        ref,
        out_dir=overlay,
        organs=organs,
        case_id=_case_label(data.ref.source),
        flags=volume_flags(volumes),
    )


def _case_label(source: Path) -> str:
    """``CT/1`` or ``MR/2/T2SPIR`` for a CHAOS mask folder, else the file or folder name."""
    parts = Path(source).resolve().parts
    for kind in ("CT", "MR"):
        if kind in parts:
            i = len(parts) - 1 - parts[::-1].index(kind)
            tail = [p for p in parts[i:] if p not in ("Ground", "Results")]
            return "/".join(tail)
    return Path(source).name


def _dataset(
    ref: Path,
    pred: Path,
    organs: list[str] | None,
    json_path: Path | None,
    csv_path: Path | None,
) -> None:
    import json

    from rich.table import Table

    from organseg.cli._console import console, err_console
    from organseg.metrics.dataset import evaluate_dataset

    report = evaluate_dataset(
        ref, pred, organs, progress=lambda msg: err_console.print(f"scoring {msg}", highlight=False)
    )
    table = Table(title=f"{pred} vs {ref}")
    table.add_column("case", no_wrap=True)
    table.add_column("organ", no_wrap=True)
    for title, _, _ in _CHAOS_COLUMNS:
        table.add_column(title, justify="right", no_wrap=True)
    for case, organ, metrics in report.rows():
        values = metrics.to_dict()
        note = " (no prediction)" if metrics.empty == "missing" else ""
        table.add_row(
            case.case_id + note,
            organ,
            *[_fmt(values[key], digits) for _, key, digits in _CHAOS_COLUMNS],  # type: ignore[arg-type]
        )
    console.print(table)
    means = Table(title="CHAOS task means")
    means.add_column("task", no_wrap=True)
    means.add_column("n", justify="right")
    means.add_column("missing", justify="right")
    for title, _, _ in _CHAOS_COLUMNS:
        means.add_column(title, justify="right", no_wrap=True)
    for task, values in report.task_means().items():
        means.add_row(
            task,
            str(int(values["n"])),
            str(int(values["missing"])),
            *[_fmt(values[key], digits) for _, key, digits in _CHAOS_COLUMNS],
        )
    console.print(means)
    if report.missing:
        err_console.print(
            f"[yellow]warning:[/] no prediction for {len(report.missing)} series: "
            + ", ".join(report.missing)
            + "; each of their organs counts as score 0 (and DICE 0) in the task means, as the "
            "challenge counts a missing series",
            highlight=False,
            soft_wrap=True,
        )
    if csv_path is not None:
        report.write_csv(csv_path)
        err_console.print(f"wrote {csv_path}", highlight=False)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        err_console.print(f"wrote {json_path}", highlight=False)


#: (header, metric key, decimals) of the per-label table.
_LABEL_COLUMNS = (
    ("Dice", "dice", 3),
    ("HD95 mm", "hd95", 2),
    ("ASSD mm", "assd", 2),
    ("RAVD %", "ravd", 2),
    ("NSD", "nsd", 3),
)


def _parse_tolerances(items: list[str] | None) -> dict[str, float] | float | None:
    """``--tolerance 2`` (every label) or ``--tolerance pancreas=2 --tolerance aorta=1.5``."""
    from organseg.errors import ConfigError

    if not items:
        return None
    everyone: float | None = None
    per_label: dict[str, float] = {}
    for item in (part.strip() for entry in items for part in entry.split(",") if part.strip()):
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--tolerance {item!r}: expected MM or LABEL=MM") from None
        if sep:
            per_label[name.strip()] = number
        else:
            everyone = number
    if everyone is not None and per_label:
        raise ConfigError(
            "--tolerance: give one value for all labels or LABEL=MM entries, not both"
        )
    return per_label or everyone


def _label_names(label_set, organs: list[str] | None) -> list[str] | None:
    """The label names ``--organs`` asks for (None: every label), checked against the set."""
    from organseg.errors import ConfigError

    if not organs:
        return None
    names = [n.strip() for item in organs for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in label_set.names]
    if unknown:
        raise ConfigError(
            f"--organs: unknown label(s) {unknown}; labels are {list(label_set.names)}"
        )
    return names


def _label_table(title: str, rows) -> None:
    from rich.table import Table

    from organseg.cli._console import console

    table = Table(title=title)
    table.add_column("case", no_wrap=True)
    table.add_column("label", no_wrap=True)
    for header, _, _ in _LABEL_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    for case, name, values, note in rows:
        table.add_row(case, name + note, *[_fmt(values[key], d) for _, key, d in _LABEL_COLUMNS])
    console.print(table)


def _by_label(
    ref: Path,
    pred: Path,
    labels: Path | None,
    organs: list[str] | None,
    tolerance: list[str] | None,
    json_path: Path | None,
    overlay: Path | None = None,
) -> None:
    """Per-label metrics of one case (REF a label volume) or of a dataset (REF its root or labels
    folder, PRED a folder of ``{case}{file_ending}`` predictions)."""
    import json

    from organseg.cli._console import err_console
    from organseg.errors import ConfigError
    from organseg.metrics.labelset_eval import (
        evaluate_label_files,
        evaluate_label_folder,
        read_label_set,
    )

    label_set = read_label_set(labels if labels is not None else ref)
    only = _label_names(label_set, organs)
    tolerances = _parse_tolerances(tolerance)
    err_console.print(
        f"label set {label_set.name or '(unnamed)'}: "
        + ", ".join(f"{lb.value} {lb.name}" for lb in label_set)
        + (f"; ignore {label_set.ignore}" if label_set.ignore is not None else ""),
        highlight=False,
        soft_wrap=True,
    )
    notes = {
        "both": " (both empty)",
        "reference": " (empty reference)",
        "prediction": " (empty prediction)",
    }
    if overlay is not None and not ref.is_file():
        raise ConfigError("--overlay applies to a single case, not a dataset folder")
    if ref.is_file():
        results = evaluate_label_files(ref, pred, label_set, tolerances, only)
        _label_table(
            f"{pred} vs {ref}",
            [(ref.name, n, m.to_dict(), notes.get(m.empty or "", "")) for n, m in results.items()],
        )
        payload = {
            "label_set": label_set.name,
            "labels": {name: m.to_dict() for name, m in results.items()},
        }
        if overlay is not None:
            written = _write_label_overlays(ref, pred, label_set, only, overlay)
            err_console.print(f"wrote {len(written)} overlay PNGs to {overlay}", highlight=False)
    else:
        report = evaluate_label_folder(
            ref,
            pred,
            label_set,
            tolerances,
            progress=lambda case: err_console.print(f"scoring {case}", highlight=False),
            only=only,
        )
        rows = []
        for case, per_label in report.cases.items():
            missing = " (no prediction)" if case in report.missing else ""
            for name, m in per_label.items():
                rows.append((case + missing, name, m.to_dict(), notes.get(m.empty or "", "")))
        _label_table(f"{pred} vs {ref}", rows)
        _label_table(
            "means per label", [("mean", n, v, f" (n={v['n']})") for n, v in report.means().items()]
        )
        if report.missing:
            err_console.print(
                f"[yellow]warning:[/] no prediction for {len(report.missing)} case(s): "
                + ", ".join(report.missing)
                + "; scored as empty predictions (Dice 0)",
                highlight=False,
                soft_wrap=True,
            )
        payload = report.to_dict()
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        err_console.print(f"wrote {json_path}", highlight=False)


def _write_label_overlays(
    ref: Path, pred: Path, label_set, only: list[str] | None, overlay: Path
) -> list[Path]:
    """Prediction filled and reference outlined in each label's colour, over the case's first image
    channel when the reference lies in an nnU-Net dataset, else on black; flags for the labels
    whose typical volume is known."""
    from organseg.metrics.labelset_eval import case_image, read_label_pair
    from organseg.metrics.labelwise import label_volumes_ml
    from organseg.viz import render_overlays, volume_flags

    reference, ref_labels, pred_labels = read_label_pair(ref, pred, label_set)
    image = case_image(ref)
    if image is not None and image.shape != reference.shape:
        image = None
    volumes = label_volumes_ml(pred_labels, reference.geometry, label_set)
    if only is not None:
        volumes = {name: v for name, v in volumes.items() if name in only}
    return render_overlays(
        image,
        reference.with_array(pred_labels),
        reference.with_array(ref_labels),
        out_dir=overlay,
        organs=only,
        case_id=ref.name,
        flags=volume_flags(volumes),
        label_set=label_set,
    )


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the top-level app."""

    @app.command("evaluate")
    def evaluate_command(
        ref: Path = typer.Argument(
            ...,
            help="Reference: a CHAOS PNG mask folder, a CHAOS case folder, a volume file "
            "(NIfTI/MHA/NRRD), or a CHAOS dataset folder to score a whole set of predictions; "
            "an nnU-Net or MSD dataset folder (or, with --labels, its labelsTr) scores per label.",
        ),
        pred: Path = typer.Argument(
            ...,
            help="Prediction: PNG folder (or one holding Results/), volume file, DICOM-SEG (.dcm, "
            "placed on the reference's DICOM series), or a folder of predictions in the CHAOS "
            "layout (CT/1, MR/3/T2SPIR, … as `organseg predict` writes it) when REF is a dataset; "
            "a missing series scores 0. With a label set: a volume or DICOM-SEG (placed on REF's "
            "grid) for one case, a folder of {case}{file_ending} predictions for a dataset.",
        ),
        dicom: Path | None = typer.Option(
            None, "--dicom", help="DICOM series giving geometry (mm) and modality; single case."
        ),
        modality: str | None = typer.Option(
            None, "--modality", help="CT, MR-T1-in, MR-T1-out, MR-T2SPIR or MR (overrides headers)."
        ),
        organs: list[str] | None = typer.Option(
            None,
            "--organs",
            help="Organs to score (liver, right_kidney, left_kidney, spleen); repeat or comma-"
            "separate. Default: CT liver; MR every organ present in either mask. With a label "
            "set: label names (default: every label).",
        ),
        json_path: Path | None = typer.Option(
            None, "--json", help="Write the metrics as JSON (RAVD %, distances mm)."
        ),
        csv_path: Path | None = typer.Option(
            None, "--csv", help="Dataset mode: write per-case rows and task means as CSV."
        ),
        overlay: Path | None = typer.Option(
            None, "--overlay", help="Single case: write overlay PNGs (slices + montage.png) here."
        ),
        labels: Path | None = typer.Option(
            None,
            "--labels",
            help="A dataset.json (nnU-Net v2 or MSD) or its dataset folder: score any label set "
            "per label (Dice, HD95, ASSD, RAVD, NSD). Implied when REF is such a dataset.",
        ),
        tolerance: list[str] | None = typer.Option(
            None,
            "--tolerance",
            help="Label set: NSD tolerance in mm, for every label (2) or per label (pancreas=2); "
            "repeat or comma-separate. Default 1 mm.",
        ),
    ) -> None:
        """Score predicted masks: CHAOS metrics (DICE, RAVD, ASSD, MSSD) and 0–100 scores, or per
        label for any label set (Dice, HD95, ASSD, RAVD, NSD)."""
        from organseg.errors import ConfigError
        from organseg.metrics.inputs import png_series_folder

        if labels is not None or (ref.is_dir() and (ref / "dataset.json").is_file()):
            for given, option in (
                (dicom, "--dicom"),
                (modality, "--modality"),
                (csv_path, "--csv"),
            ):
                if given is not None:
                    raise ConfigError(f"{option} applies to CHAOS evaluation, not to a label set")
            _by_label(ref, pred, labels, organs, tolerance, json_path, overlay)
            return
        if tolerance:
            raise ConfigError("--tolerance applies with a label set (--labels dataset.json)")
        organ_list = _parse_organs(organs)
        single = ref.is_file() or (ref.is_dir() and png_series_folder(ref) is not None)
        if single or not ref.exists():
            if csv_path is not None:
                raise ConfigError("--csv applies when REF is a CHAOS dataset folder")
            _single(ref, pred, dicom, modality, organ_list, json_path, overlay)
            return
        if overlay is not None:
            raise ConfigError("--overlay applies to a single case, not a CHAOS dataset folder")
        if dicom is not None or modality is not None:
            raise ConfigError(
                "--dicom and --modality apply to a single case; a CHAOS dataset carries its own"
            )
        _dataset(ref, pred, organ_list, json_path, csv_path)
