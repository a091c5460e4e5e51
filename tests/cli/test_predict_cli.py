"""`organseg predict` as a user meets it: outputs checked before any work, every format read back by
`organseg evaluate`, several series written in the CHAOS layout with unservable ones skipped."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from organseg.io import discover_cases, read_dicom_geometry, write_volume_file
from organseg.io.png import read_mask_series
from organseg.io.volume import Modality, Volume
from organseg.metrics.chaos import evaluate_masks
from tests.conftest import run_cli_folded


@dataclass
class Run:
    exit_code: int
    output: str  # stdout and stderr


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]):
    """Run the console-script entry point as a user does (exit codes and one-line errors included)."""

    def run(*args: str | Path) -> Run:
        return Run(*run_cli_folded(capsys, *args))

    return run


def ct_case(synth_root: Path, n: int = 1) -> Path:
    return synth_root / "Train_Sets" / "CT" / str(n)


def expected_liver_metrics(synth_root: Path, n: int = 1) -> dict:
    """What evaluate must report for an all-liver prediction of synthetic CT case ``n``."""
    ref = next(r for r in discover_cases(synth_root) if r.case_id == f"CT/{n}")
    truth = read_mask_series(ref.mask_dir, Modality.CT).array
    geometry, _, _ = read_dicom_geometry(ref.image_dir)
    return evaluate_masks(truth, np.ones_like(truth), geometry, ["liver"])["liver"].to_dict()


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.mha", "seg.nrrd", "seg", "seg.dcm"])
def test_predict_then_evaluate_every_format(
    invoke, name: str, liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    case = ct_case(synth_root)
    out, scores = tmp_path / name, tmp_path / "scores.json"
    result = invoke("predict", case / "DICOM_anon", "-o", out, "--local", liver_everywhere_model,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = invoke("evaluate", case, out, "--json", scores)
    assert result.exit_code == 0, result.output
    got = json.loads(scores.read_text())["liver"]
    expected = expected_liver_metrics(synth_root)
    assert got["dice"] == pytest.approx(expected["dice"])
    assert got["pred_voxels"] == expected["pred_voxels"]
    assert got["assd"] == pytest.approx(expected["assd"])


def _snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.is_file() else None) for p in paths}


def test_existing_outputs_stop_the_run_before_any_work(
    invoke, liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    series = ct_case(synth_root) / "DICOM_anon"
    out, report, overlay = tmp_path / "seg.nii.gz", tmp_path / "r.json", tmp_path / "ov"
    common = ("predict", series, "-o", out, "--local", liver_everywhere_model, "--device", "cpu")
    out.write_bytes(b"mine")
    result = invoke(*common, "--report", report, "--overlay", overlay)
    assert result.exit_code == 2
    assert "seg.nii.gz: already exists; pass --overwrite" in result.output
    assert out.read_bytes() == b"mine"
    assert not report.exists()
    assert not overlay.exists()

    # Each kind of output is protected on its own: the report, then the overlay folder.
    out.unlink()
    report.write_text("keep")
    result = invoke(*common, "--report", report)
    assert result.exit_code == 2
    assert "r.json" in result.output
    assert report.read_text() == "keep"
    assert not out.exists()
    report.unlink()
    overlay.mkdir()
    (overlay / "notes.txt").write_text("keep")
    result = invoke(*common, "--overlay", overlay)
    assert result.exit_code == 2
    assert "ov" in result.output
    assert not out.exists()

    result = invoke(*common, "--report", report, "--overlay", overlay, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert json.loads(report.read_text())["case"] == "DICOM_anon"
    assert (overlay / "notes.txt").read_text() == "keep"  # only our own pictures are replaced
    assert (overlay / "montage.png").is_file()


def test_names_that_cannot_hold_the_output_are_refused(
    invoke, liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    series = ct_case(synth_root) / "DICOM_anon"
    model = ("--local", liver_everywhere_model, "--device", "cpu")
    result = invoke("predict", series, "-o", tmp_path / "seg.png", *model)
    assert result.exit_code == 2
    assert "PNG mask series is one file per slice" in result.output
    result = invoke("predict", synth_root, "-o", tmp_path / "multi.nii.gz", *model)
    assert result.exit_code == 2
    message = result.output
    assert "holds 6 series (CT/1, CT/2, MR/1/T1DUAL, MR/1/T2SPIR, …)" in message
    assert "CHAOS layout" in message
    volume = tmp_path / "image.nii.gz"
    write_volume_file(Volume(np.zeros((4, 8, 8), np.int16)), volume)
    result = invoke("predict", volume, "-o", tmp_path / "seg.dcm", *model)
    assert result.exit_code == 2
    assert "DICOM-SEG output needs the source DICOM" in result.output
    assert list(tmp_path.iterdir()) == [volume]  # nothing created, no folder named seg.png


def test_cli_messages_name_the_option(invoke, liver_everywhere_model: Path, tmp_path: Path) -> None:
    volume = tmp_path / "image.nii.gz"
    write_volume_file(Volume(np.zeros((4, 8, 8), np.int16)), volume)  # no modality recorded
    result = invoke("predict", volume, "-o", tmp_path / "seg.nii.gz", "--local",
                    liver_everywhere_model, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 2
    message = result.output
    assert "pass --modality CT, MR-T1-in, MR-T1-out or MR-T2SPIR" in message
    assert "field" not in message


@pytest.mark.parametrize(
    ("fmt", "ending"), [("auto", ""), ("nifti", ".nii.gz"), ("dicom-seg", ".dcm")]
)
def test_mixed_folder_ct_only_ensemble_chaos_layout_then_dataset_evaluate(
    invoke, fmt: str, ending: str, liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    out, report, table = tmp_path / "preds", tmp_path / "run.json", tmp_path / "scores.csv"
    result = invoke("predict", synth_root, "-o", out, "--format", fmt, "--report", report,
                    "--local", liver_everywhere_model, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 1, result.output  # 1: written, but some series were skipped
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.parent == out / "CT")
    assert written == [f"CT/1{ending}", f"CT/2{ending}"]
    assert not (out / "MR").exists()
    assert "skipped 4 of 6 series" in result.output  # T1 in+out phases are stacked: one input
    assert "MR/1/T2SPIR: MR-T2SPIR: the ensemble serves CT" in result.output
    payload = json.loads(report.read_text())
    assert [r["case"] for r in payload["results"]] == ["CT/1", "CT/2"]
    assert {s["case"] for s in payload["skipped"]} == {
        f"MR/{n}/{s}" for n in (1, 2) for s in ("T1DUAL", "T2SPIR")
    }
    assert payload["input"] == str(synth_root.resolve())
    assert payload["model"]["model_dir"] == str(liver_everywhere_model.resolve())
    assert "version" in payload["model"]
    assert payload["started"].endswith("+00:00")

    result = invoke("evaluate", synth_root, out, "--csv", table)
    assert result.exit_code == 0, result.output
    assert "no prediction for 6 series" in result.output
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [r for r in rows if r["row"] == "case"]
    assert [r["case_id"] for r in scored] == ["CT/1", "CT/2"]
    assert float(scored[0]["dice"]) == pytest.approx(expected_liver_metrics(synth_root)["dice"])
    missing = {r["case_id"] for r in rows if r["row"] == "missing"}
    assert missing == {f"MR/{n}/{s}" for n in (1, 2) for s in ("T1DUAL-in", "T1DUAL-out", "T2SPIR")}
    ct_mean = next(r for r in rows if r["row"] == "mean" and r["case_id"] == "Task 2 (liver, CT)")
    assert int(ct_mean["n"]) == 2


def test_nothing_to_segment_is_an_error(
    invoke, liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    result = invoke("predict", synth_root / "Train_Sets" / "MR", "-o", tmp_path / "p",
                    "--local", liver_everywhere_model)  # fmt: skip
    assert result.exit_code == 2
    assert "nothing this ensemble can segment" in result.output
    assert not (tmp_path / "p").exists()


@pytest.mark.ray
def test_local_predict_asks_the_modality_classifier_under_the_gate_flags(
    invoke, trained_ensemble, synth_root: Path, tmp_path: Path
) -> None:
    """A headerless NIfTI without --modality goes to the model directory's classifier, under the same
    gate as the serve config (--modality-min-*): refused below the confidence or when its
    out-of-fold validation is too thin, with the reason and what to pass; routed when it passes."""
    from organseg.io import load_case

    _, report = trained_ensemble
    ref = next(r for r in discover_cases(synth_root) if r.modality is Modality.CT)
    image = load_case(ref, with_label=False).image
    bare = Volume(image.array, image.geometry)  # no header, no recorded modality
    volume = write_volume_file(bare, tmp_path / "scan.nii.gz")
    seg = tmp_path / "seg.nii.gz"
    base = ("predict", volume, "-o", seg, "--local", report.model_dir, "--device", "cpu")
    result = invoke(*base, "--modality-min-confidence", "0.999")
    assert result.exit_code == 2, result.output
    assert "the modality classifier says CT at" in result.output
    assert "below the 1.00 required" in result.output
    assert "pass --modality" in result.output
    result = invoke(*base, "--modality-min-held-out-series", "5")
    assert result.exit_code == 2, result.output
    assert "validated on only 4 out-of-fold held-out" in result.output
    assert "5 per modality needed" in result.output
    assert not seg.exists()
    result = invoke(*base, "--modality-min-confidence", "0.5")
    assert result.exit_code == 0, result.output
    assert "CT (modality classifier" in result.output
    assert seg.is_file()
    # the gate of a served endpoint is its serve config's
    result = invoke("predict", volume, "-o", tmp_path / "other.nii.gz",
                    "--endpoint", "http://127.0.0.1:9", "--modality-min-confidence", "0.5")  # fmt: skip
    assert result.exit_code == 2
    assert "modality_min_*" in result.output


def test_an_existing_output_is_refused_before_the_model_loads(
    liver_everywhere_model: Path, synth_root: Path, tmp_path: Path
) -> None:
    """The refusal comes from ensemble.yaml and the file system alone: nothing imports torch or
    loads the ensemble (which takes seconds), so a wrong `-o` costs well under one."""
    import subprocess
    import sys

    series = ct_case(synth_root) / "DICOM_anon"
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"mine")
    probe = (
        "import sys\n"
        "from organseg.cli import main\n"
        "try:\n"
        f"    main(['predict', {str(series)!r}, '-o', {str(out)!r}, '--local', "
        f"{str(liver_everywhere_model)!r}, '--device', 'cpu'])\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "print('loaded', sorted(m for m in ('torch', 'organseg.ensemble.predictor') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert "exit 2" in done.stdout, done.stdout + done.stderr
    assert "seg.nii.gz: already exists; pass --overwrite" in done.stdout + done.stderr
    assert "loaded []" in done.stdout, done.stdout
    assert out.read_bytes() == b"mine"
    # The same command with a free output does load the model (so the probe can tell).
    free = tmp_path / "free.nii.gz"
    done = subprocess.run(
        [sys.executable, "-c", probe.replace(str(out), str(free))],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert "'torch'" in done.stdout, done.stdout + done.stderr
    assert free.is_file()


@pytest.mark.ray
def test_local_predict_refuses_a_confidently_wrong_classifier(
    invoke, trained_ensemble, synth_root: Path, tmp_path: Path
) -> None:
    """A classifier that says MR-T2SPIR for CT as confidently as the right one says CT: refused under
    the default gate (its overall out-of-fold accuracy) and, with the overall threshold lowered, by
    the per-modality one naming CT; nothing is written. Without the per-modality gate it would answer."""
    from organseg.io import load_case
    from tests.conftest import confidently_wrong_model

    _, report = trained_ensemble
    wrong_dir = confidently_wrong_model(Path(report.model_dir), tmp_path / "wrong")
    ref = next(r for r in discover_cases(synth_root) if r.modality is Modality.CT)
    image = load_case(ref, with_label=False).image
    volume = write_volume_file(Volume(image.array, image.geometry), tmp_path / "scan.nii.gz")
    seg = tmp_path / "seg.nii.gz"
    base = ("predict", volume, "-o", seg, "--local", wrong_dir, "--device", "cpu",
            "--modality-min-confidence", "0.5")  # fmt: skip
    result = invoke(*base)
    assert result.exit_code == 2, result.output
    assert "out-of-fold held-out accuracy is 0.50 on 16 series" in result.output
    assert "pass --modality" in result.output
    lenient = (*base, "--modality-min-held-out-accuracy", "0.5")
    result = invoke(*lenient)
    assert result.exit_code == 2, result.output
    assert "accuracy on CT series is 0.00 (0 of 4" in result.output
    assert "required of each modality" in result.output
    assert not seg.exists()
    # the gate is what stands between: with it off, the classifier answers MR-T2SPIR for the CT
    result = invoke(*lenient, "--modality-min-held-out-accuracy-per-modality", "0")
    assert result.exit_code == 0, result.output
    assert "MR-T2SPIR (modality classifier" in result.output
