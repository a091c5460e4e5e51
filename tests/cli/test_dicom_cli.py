"""`organseg dicom listen`'s modality gate options: in-process only, like `organseg predict`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from organseg.cli import app
from organseg.ensemble.routing import ModalityPolicy

GATE = ["--modality-min-confidence", "0.75", "--modality-min-held-out-accuracy", "0.8",
        "--modality-min-held-out-series", "6"]  # fmt: skip


@pytest.mark.parametrize(
    "served", [["--endpoint", "http://127.0.0.1:9"], ["--grpc", "127.0.0.1:9"]]
)
def test_gate_options_with_a_served_endpoint_are_a_usage_error(served, tmp_path: Path) -> None:
    args = ["dicom", "listen", "--port", "0", "--store", str(tmp_path / "spool"), *served]
    result = CliRunner().invoke(app, [*args, "--modality-min-confidence", "0.5"])
    assert result.exit_code != 0
    assert "--modality-min-* apply to --local" in str(result.exception)
    assert "serve config" in str(result.exception)
    assert not (tmp_path / "spool").exists()  # refused before anything was set up


def test_the_local_gate_reaches_the_in_process_predictor(
    liver_everywhere_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command builds the node and hands it to the network edge; the edge is replaced by a
    recorder so the test inspects what the node would serve with."""
    import organseg.cli.dicom as dicom

    started = []
    monkeypatch.setattr(dicom, "serve_node", lambda listener, backend: started.append(backend))
    args = ["dicom", "listen", "--port", "0", "--store", str(tmp_path / "spool")]
    args += ["--local", str(liver_everywhere_model), "--device", "cpu", *GATE]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (backend,) = started
    assert backend.predictor.policy == ModalityPolicy(
        min_confidence=0.75, min_held_out_accuracy=0.8, min_held_out_series=6
    )
    result = CliRunner().invoke(app, args[: -len(GATE)])  # without the options: the defaults
    assert result.exit_code == 0, result.output
    assert started[-1].predictor.policy == ModalityPolicy()
