"""A shortened quickstart, end to end, through the same code path as `organseg quickstart`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from rich.console import Console

from organseg.ensemble.spec import load_spec
from organseg.quickstart import QuickstartOptions, run_quickstart
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
        assert report["identical_to_in_process"]
        assert report["modality"] == ("CT" if report["case"] == "CT/1" else "MR-T2SPIR")
        assert report["modality_reason"].startswith("DICOM Modality=")
        assert Path(report["mask"]).is_file()
        assert Path(report["overlay"]).name == "montage.png"
        assert Path(report["overlay"]).is_file()

    # re-running reuses the work directory: data and trained members are not redone. Not a member
    # is retrained: every training checkpoint is the same file, untouched, and none is added; the
    # model directory serves the same weights
    checkpoints = _fingerprints(result.workdir.rglob(STATE_FILE))
    assert checkpoints, f"no training checkpoint ({STATE_FILE}) under {result.workdir}"
    weights = _fingerprints(
        result.model_dir / m.weights for m in load_spec(result.model_dir).members
    )
    again = run_quickstart(options, console=console)
    assert again.model_dir == result.model_dir
    assert _fingerprints(result.workdir.rglob(STATE_FILE)) == checkpoints
    assert {p: sha for p, (sha, _) in _fingerprints(weights).items()} == {
        p: sha for p, (sha, _) in weights.items()
    }
    assert (result.workdir / "experiment.yaml").is_file()
