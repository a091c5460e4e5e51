"""The experiment config and the Serve router import without torch (the CLI and the ingress stay light).

The router also unpickles the ensemble's answer (a ``Prediction``), so that class lives in a torch-free module.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["organseg.config", "organseg.serve.router", "organseg.cli", "organseg.ensemble.prediction"],
)
def test_module_imports_without_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"importing {module} loaded torch"
