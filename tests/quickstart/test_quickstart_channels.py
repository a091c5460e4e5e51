"""The quickstart on a dataset whose channels are stacked (two CT phases per case), as docs/data.md
runs it: its members take both channels, the validation case is scored per label and served over
HTTP and gRPC with both channels, coming back with the in-process mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from organseg.ensemble.inputs import channel_pairs
from organseg.ensemble.spec import load_spec
from organseg.io.volume import Modality
from organseg.quickstart import QuickstartOptions, experiment
from organseg.synth.abdomen import ABDOMEN_LABELS, PHASE_CHANNELS, write_abdomen_dataset
from organseg.train.data import prepare_data
from tests.conftest import REPO_ROOT, run_cli
from tests.docs.blocks import block_under, command_lines

HEADING = "A dataset of several channels in the quickstart"


def test_members_take_every_stacked_channel(tmp_path: Path) -> None:
    """The quickstart's experiment on the two-phase dataset: members of two input channels (one
    sample per case), on a single-channel dataset of one, as before."""
    phases = write_abdomen_dataset(tmp_path / "phases", cases=2, size=32, slices=6, venous=True)
    single = write_abdomen_dataset(tmp_path / "single", cases=2, size=32, slices=6)
    stacked = experiment(QuickstartOptions(workdir=tmp_path / "qs", data=phases))
    assert [m.in_channels for m in stacked.members] == [2, 2]
    prepare_data(stacked)  # what config check and training resolve: both channels, CT cases
    assert [c.name for c in stacked.preprocess.channels] == PHASE_CHANNELS
    assert all(m.modalities == [Modality.CT] for m in stacked.members)
    prepare_data(stacked)  # again, as the quickstart's evaluation does after training
    plain = experiment(QuickstartOptions(workdir=tmp_path / "qs1", data=single))
    assert [m.in_channels for m in plain.members] == [1, 1]
    assert all(m.modalities == [Modality.CT] for m in plain.members)


@pytest.mark.ray
@pytest.mark.slow
def test_quickstart_on_a_two_phase_dataset_as_the_docs_run_it(
    ray_cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    synth, quickstart = command_lines(block_under(REPO_ROOT / "docs" / "data.md", HEADING))
    assert synth[:3] == ["organseg", "data", "synth"]
    assert "--venous" in synth
    assert quickstart[:2] == ["organseg", "quickstart"]
    assert run_cli(capsys, *synth[1:])[0] == 0
    ports = ["--http-port", "18703", "--grpc-port", "19703"]

    code, _, log = run_cli(capsys, *quickstart[1:], *ports)
    assert code == 0, log
    assert "members take all 2 channels as one input" in log
    workdir = tmp_path / quickstart[quickstart.index("--workdir") + 1]
    spec = load_spec(workdir / "model")
    assert spec.organs == list(ABDOMEN_LABELS)
    assert [name for name, _ in channel_pairs(spec.preprocess)] == PHASE_CHANNELS
    assert all(member.in_channels == 2 for member in spec.members)

    # scored per label on the validation case, from both channels
    evaluation = json.loads((workdir / "evaluation.json").read_text())
    [case] = {row["case"] for row in evaluation}
    assert [row["label"] for row in evaluation] == list(ABDOMEN_LABELS)
    assert all(0.0 <= row["dice"] <= 1.0 for row in evaluation)

    # served over HTTP and gRPC with both channels, the in-process mask back
    served = [json.loads(p.read_text()) for p in sorted((workdir / "predictions").glob("*.json"))]
    assert {(r["case"], r["transport"]) for r in served} == {(case, "grpc"), (case, "http")}
    for report in served:
        assert report["identical_to_in_process"], report["transport"]
        assert Path(report["mask"]).is_file()
        assert Path(report["overlay"]).is_file()
        assert report["modality"] == "CT"
        assert "channels arterial, venous stacked" in report["modality_reason"]
