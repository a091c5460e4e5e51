"""The package layers and the Ray / torch / FastAPI allow-lists of ``pyproject.toml`` hold, and they bite:
an import against them in a copy of the package breaks the contract."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "platform" / "organseg"
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]  # fmt: skip


def _lint(platform: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(
        [*LINT, *args],
        capture_output=True,
        text=True,
        cwd=platform,
        env={"PYTHONPATH": str(platform), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_the_readme_package_table_states_the_same_layers() -> None:
    """One README row per layer, top to bottom, naming the layer's packages and modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["id"] == "layers"]
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| layer (imports only those below") :].split("\n\n")[0]
    rows = [r for r in table.splitlines()[2:] if r.startswith("|")]
    named = [
        {re.sub(r"(/|\.py)$", "", n) for n in re.findall(r"`([a-z_]+(?:/|\.py))`", r.split("|")[1])}
        for r in rows
    ]
    assert named == [{name.strip() for name in layer.split("|")} for layer in layers]


def test_the_package_keeps_its_contracts() -> None:
    result = _lint(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "broken"),
    [
        ("io/volume.py", "import organseg.serve.client", "layers", "organseg.io.volume -> organseg.serve.client"),
        ("serve/stow.py", "import organseg.pacs.node", "layers", "organseg.serve.stow -> organseg.pacs.node"),
        ("pacs/node.py", "import organseg.serve.wire", "pacs-client", "organseg.pacs.node -> organseg.serve.wire"),
        ("ensemble/assembly.py", "import ray", "ray", "organseg.ensemble.assembly -> ray"),
        ("serve/client.py", "import torch", "torch", "organseg.serve.client -> torch"),
        ("pacs/node.py", "import fastapi", "http", "organseg.pacs.node -> fastapi"),
    ],
)  # fmt: skip
def test_an_import_against_the_contract_is_refused(
    tmp_path: Path, module: str, line: str, contract: str, broken: str
) -> None:
    copy = tmp_path / "organseg"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    target = copy / module
    target.write_text(
        target.read_text() + f"\n\ndef _against_the_contract() -> None:\n    {line}\n"
    )
    result = _lint(tmp_path, contract)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout.replace("\n", " "), result.stdout
