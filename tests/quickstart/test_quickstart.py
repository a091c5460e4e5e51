"""A shortened quickstart, end to end, through the same code path as `organseg quickstart`: on its own
synthetic CHAOS data, and on an nnU-Net dataset as docs/data.md runs it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from rich.console import Console

from organseg.ensemble.spec import load_spec
from organseg.quickstart import QuickstartOptions, QuickstartResult, run_quickstart
from organseg.train.core import STATE_FILE

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _fingerprints(paths: Iterable[Path]) -> dict[Path, tuple[str, int]]:
    """(sha256, mtime in ns) of each file: what a retraining would change."""
    return {
        p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(paths)
    }


def test_shortened_quickstart_produces_every_output(ray_cluster: str, tmp_path: Path) -> None:
    options = QuickstartOptions(
        workdir=tmp_path / "qs", epochs=2, cases=2, size=64, http_port=18701, grpc_port=19701
    )
    console = Console(stderr=True, width=140)
    result = run_quickstart(options, console=console)

    assert (result.model_dir / "ensemble.yaml").is_file()
    assert (result.model_dir / "learning_curves.png").is_file()
    # CHAOS metrics on held-out CT and MR cases
    evaluated = {(row["case"], row["organ"]) for row in result.evaluation}
    assert evaluated == {("CT/1", "liver"), ("MR/1/T2SPIR", "liver")}
    for row in result.evaluation:
        assert 0.0 <= row["dice"] <= 1.0
        assert 0.0 <= row["score"] <= 100.0
    assert json.loads((result.workdir / "evaluation.json").read_text()) == result.evaluation
    # one CT and one MR volume, each over HTTP and gRPC, routed by their headers, same masks as in-process
    sent = {(r["case"], r["transport"]) for r in result.served}
    assert sent == {(c, t) for c in ("CT/1", "MR/1/T2SPIR") for t in ("http", "grpc")}
    for report in result.served:
        _check_served(report)
        assert report["modality"] == ("CT" if report["case"] == "CT/1" else "MR-T2SPIR")
        assert report["modality_reason"].startswith("DICOM Modality=")

    # re-running reuses the work directory: data and trained members are not redone
    again: list[QuickstartResult] = []
    _check_rerun_does_not_retrain(
        result.workdir,
        result.model_dir,
        lambda: again.append(run_quickstart(options, console=console)),
    )
    assert again[0].model_dir == result.model_dir
    assert (result.workdir / "experiment.yaml").is_file()


def _check_served(report: dict) -> None:
    """A volume segmented over HTTP or gRPC: the in-process mask, written with its overlay montage."""
    assert report["identical_to_in_process"]
    assert Path(report["mask"]).is_file()
    assert Path(report["overlay"]).name == "montage.png"
    assert Path(report["overlay"]).is_file()


def _check_rerun_does_not_retrain(
    workdir: Path, model_dir: Path, rerun: Callable[[], object]
) -> None:
    """Not a member is retrained by ``rerun``: every training checkpoint is the same file, untouched,
    and none is added; the model directory serves the same weights."""
    checkpoints = _fingerprints(workdir.rglob(STATE_FILE))
    assert checkpoints, f"no training checkpoint ({STATE_FILE}) under {workdir}"
    weights = _fingerprints(model_dir / m.weights for m in load_spec(model_dir).members)
    rerun()
    assert _fingerprints(workdir.rglob(STATE_FILE)) == checkpoints
    assert {p: sha for p, (sha, _) in _fingerprints(weights).items()} == {
        p: sha for p, (sha, _) in weights.items()
    }


def test_quickstart_on_an_nnunet_dataset_as_the_docs_run_it(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """docs/data.md's "The quickstart on your own data", run as written (on free ports): the
    synthetic nine-label nnU-Net dataset trains the quickstart's members on its label set, is scored
    per label on its validation case, and that case is segmented over HTTP and gRPC with the
    in-process mask; the summary names every label; training again trains nothing."""
    from organseg.synth.abdomen import ABDOMEN_LABELS
    from tests.conftest import REPO_ROOT, run_cli
    from tests.docs.blocks import block_under, command_lines

    monkeypatch.chdir(tmp_path)
    synth, quickstart = command_lines(
        block_under(REPO_ROOT / "docs" / "data.md", "The quickstart on your own data")
    )
    assert synth[:3] == ["organseg", "data", "synth"]
    assert quickstart[:2] == ["organseg", "quickstart"]
    assert run_cli(capsys, *synth[1:])[0] == 0
    ports = ["--http-port", "18702", "--grpc-port", "19702"]

    code, _, log = run_cli(capsys, *quickstart[1:], *ports)
    assert code == 0, log
    workdir = tmp_path / quickstart[quickstart.index("--workdir") + 1]
    model_dir = workdir / "model"
    spec = load_spec(model_dir)
    assert spec.task is None
    assert spec.organs == list(ABDOMEN_LABELS)
    assert [m.name for m in spec.members] == ["dualtail", "attention-unet"]
    assert all([m.value for m in member.modalities] == ["CT"] for member in spec.members)
    assert "labels (9), mean Dice:" in log
    for name in ABDOMEN_LABELS:  # the summary names every label with its mean Dice
        assert re.search(rf"\b{name} \d\.\d\d\b", log.split("mean Dice:")[1]), name

    # per label, on the validation case, as `organseg evaluate` reads the written label map back
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    [case] = {row["case"] for row in evaluation}
    assert [row["label"] for row in evaluation] == list(ABDOMEN_LABELS)
    for row in evaluation:
        assert 0.0 <= row["dice"] <= 1.0
        assert 0.0 <= row["nsd"] <= 1.0
        assert row["ref_voxels"] > 0  # every label is drawn in every synthetic case
    code, _, err = run_cli(
        capsys, "evaluate", f"data/quickstart-nnunet/labelsTr/{case}.nii.gz",
        workdir / "evaluation" / f"{case}.nii.gz", "--labels", "data/quickstart-nnunet",
        "--json", tmp_path / "scores.json",
    )  # fmt: skip
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())["labels"]
    assert {n: m["dice"] for n, m in scores.items()} == {r["label"]: r["dice"] for r in evaluation}

    # the validation case over HTTP and gRPC, routed by the modality its channel names
    served = [json.loads(p.read_text()) for p in sorted((workdir / "predictions").glob("*.json"))]
    assert {(r["case"], r["transport"]) for r in served} == {(case, "grpc"), (case, "http")}
    for report in served:
        _check_served(report)
        assert report["modality"] == "CT"
        assert report["modality_source"] == "request"
        assert sorted(report["organs"]) == sorted(
            ABDOMEN_LABELS
        )  # a gRPC answer's map is unordered
        assert report["label_values"] == {n: i + 1 for i, n in enumerate(ABDOMEN_LABELS)}

    # re-running trains nothing: the quickstart's training step again on its work directory (the whole
    # re-run, Serve included, is shown on the CHAOS data above, and would double this test's time)
    from organseg.quickstart import experiment
    from organseg.train.launcher import train_experiment

    given = dict(zip(quickstart[2::2], quickstart[3::2], strict=True))
    options = QuickstartOptions(
        workdir=Path(given["--workdir"]),
        data=Path(given["--data"]),
        size=int(given["--size"]),
        epochs=int(given["--epochs"]),
    )

    def train_again() -> None:
        report = train_experiment(experiment(options))
        assert [o.status for o in report.outcomes] == ["already trained"] * 2
        assert report.model_dir == model_dir

    _check_rerun_does_not_retrain(workdir, model_dir, train_again)
