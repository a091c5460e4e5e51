"""A shortened quickstart, end to end, through the same code path as `organseg quickstart`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from organseg.quickstart import QuickstartOptions, run_quickstart

pytestmark = [pytest.mark.ray, pytest.mark.slow]


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

    # re-running reuses the work directory: data and trained members are not redone
    again = run_quickstart(options, console=console)
    assert again.model_dir == result.model_dir
    assert (result.workdir / "experiment.yaml").is_file()
