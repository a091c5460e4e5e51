"""The commands of the README and the docs run as written, or say why they cannot run here.

Every runnable block (``bash``, ``console``, ``python``) carries a marker naming the test that runs it
or the reason it is not run (``tests/docs/blocks.py``). The README's five-minute tour runs here as a
newcomer types it, on fresh synthetic data, with a small CT model standing in for the one ``train``
would write; the lines that run until stopped or need minutes have their own tests, named below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.cli import main
from tests.conftest import REPO_ROOT
from tests.docs.blocks import RUNNABLE, block_under, blocks, command_lines, doc_files

#: Tour lines not run here, and the test that runs each.
TOUR_ELSEWHERE = {
    "train": "tests/train/test_training.py (organseg train on tiny configs, minutes)",
    "serve": "tests/cli/test_serve_cli.py (organseg serve until SIGTERM)",
    "dicom": "tests/pacs/test_orthanc_node.py (the node against a real Orthanc)",
}


def test_every_runnable_block_says_who_runs_it() -> None:
    problems = []
    for path in doc_files():
        for block in blocks(path):
            if block.lang not in RUNNABLE:
                continue
            marker = block.marker or ""
            if marker.startswith("tests/"):
                test_file = REPO_ROOT / marker.split()[0]
                if not test_file.is_file():
                    problems.append(f"{block.where()}: {marker} does not exist")
                elif path.name not in test_file.read_text():
                    problems.append(f"{block.where()}: {marker} never reads {path.name}")
            elif not (marker.startswith("not run: ") and len(marker) > len("not run: ") + 10):
                problems.append(
                    f"{block.where()}: no '<!-- docs-test: tests/… -->' or "
                    "'<!-- docs-test: not run: REASON -->' before the block"
                )
    assert not problems, "\n".join(problems)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    output = capsys.readouterr()
    assert code == 0, f"organseg {' '.join(args)}\n{output.out}\n{output.err}"
    return output.out


def test_the_five_minute_tour_runs_as_written(
    liver_everywhere_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README.md's tour: every line runs, or is one that ``TOUR_ELSEWHERE`` says another test runs.
    ``runs/tiny`` is a small CT model; ``--endpoint URL`` runs as ``--local`` (a served graph and the
    in-process ensemble give the same masks, tests/serve checks it bit for bit)."""
    monkeypatch.chdir(tmp_path)
    tour = block_under(REPO_ROOT / "README.md", "A five-minute tour")
    ran = []
    for words in command_lines(tour):
        assert words[0] == "organseg", words
        if words[1] in TOUR_ELSEWHERE:
            ran.append(f"elsewhere: {words[1]}")
            continue
        args = [w.replace("runs/tiny", str(liver_everywhere_model)) for w in words[1:]]
        if "--endpoint" in args:
            at = args.index("--endpoint")
            args[at : at + 2] = ["--local", str(liver_everywhere_model)]
        out = _run(args, capsys)
        ran.append(" ".join(words[1:3]))
        if words[1:3] == ["models", "show"]:
            assert "liver" in out
    assert ran == [
        "data synth",
        "elsewhere: train",
        "models show",
        "predict data/synth",
        "evaluate data/synth",
        "elsewhere: serve",
        "predict data/synth/Train_Sets/CT/1",
        "elsewhere: dicom",
    ]
    # what the tour promises, on disk
    assert (tmp_path / "predictions" / "CT" / "1").is_dir()
    assert "Task 2 (liver, CT)" in (tmp_path / "scores.csv").read_text()
    assert (tmp_path / "seg.dcm").is_file()
    assert (tmp_path / "seg.json").is_file()
