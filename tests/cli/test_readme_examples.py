"""docs/data.md's command-line examples, run as written (copy-paste), on the real CHAOS sample case.

Only paths are substituted: ``data/CHAOS`` is the sample, the trained model directory is a small
CT-only model, and ``Test_Sets/CT/3`` (not in the sample) is its one training case. Training and
tuning lines are skipped here: they have their own tests and take minutes.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from organseg.cli import main
from tests.conftest import REPO_ROOT
from tests.docs.blocks import block_under

SKIPPED_COMMANDS = ("train", "tune", "quickstart")


def doc_block(heading: str) -> list[str]:
    """The command lines of the first ``bash`` block under ``heading`` in docs/data.md."""
    block = block_under(REPO_ROOT / "docs" / "data.md", heading)
    return [line for line in block.text.splitlines() if line.strip()]


def substitute(line: str, sample: Path, model: Path) -> list[str]:
    words = shlex.split(line, comments=True)
    out = []
    for word in words:
        word = word.replace("data/CHAOS/Test_Sets/CT/3", "data/CHAOS/Train_Sets/CT/1")
        word = word.replace("data/CHAOS", str(sample))
        word = word.replace("runs/task2-liver-ct/model", str(model))
        out.append(word)
    return out


def test_bring_your_chaos_data_block_runs_as_written(
    chaos_sample: Path,
    liver_everywhere_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    lines = doc_block("CHAOS folders")
    ran = []
    for line in lines:
        args = substitute(line, chaos_sample, liver_everywhere_model)
        assert args[0] == "organseg", line
        if args[1] in SKIPPED_COMMANDS:
            continue
        try:
            main(args[1:])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        output = capsys.readouterr()
        assert code == 0, f"{line}\n{output.out}\n{output.err}"
        ran.append(args[1])
    assert ran.count("predict") == 2
    assert ran.count("evaluate") == 2
    # What the block promises, on disk:
    assert (tmp_path / "seg.dcm").is_file()
    report = json.loads((tmp_path / "seg.json").read_text())
    assert report["model"]["model_dir"] == str(liver_everywhere_model.resolve())
    assert (tmp_path / "seg-overlay" / "montage.png").is_file()
    assert sorted(p.name for p in (tmp_path / "predictions" / "CT" / "1").iterdir())[0] == (
        "results001.png"
    )
    assert "Task 2 (liver, CT)" in (tmp_path / "scores.csv").read_text()
    assert json.loads((tmp_path / "ct1.json").read_text())["liver"]["dice"] > 0
    assert (tmp_path / "ct1-overlay" / "montage.png").is_file()
