"""organseg built as a wheel and installed elsewhere works without the repository beside it.

The wheel is built from a copy of the sources (the symlinked shipped files become real files), installed
with ``pip --no-deps --target`` into a temporary folder, and run by this interpreter with its
dependencies but without the repository or its editable install on ``sys.path`` (``python -S`` skips the
``.pth`` files; the interpreter's site-packages come back through PYTHONPATH, after the target).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, sys
from pathlib import Path

import organseg
from organseg.serve.runner import load_serve_config
from organseg.shipped import experiment_configs, serve_profile
from organseg.config import load_config

config = load_serve_config()
configs = experiment_configs()
tiny = load_config(configs["tiny"])
print(json.dumps({
    "organseg": organseg.__file__,
    "sys_path": sys.path,
    "profile": str(serve_profile()),
    "profile_is_link": serve_profile().is_symlink(),
    "import_path": config.applications[0].import_path,
    "configs": sorted(configs),
    "tiny_members": [m.name for m in tiny.members],
}))
"""


def _build_and_install(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("platform", "configs", "deploy/serve"):
        shutil.copytree(
            ROOT / folder,
            src / folder,
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("organseg-*.whl")
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    return target


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    deps = [
        p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *deps])
    return subprocess.run(
        [sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_installed_wheel_serves_help_profile_and_configs(tmp_path: Path) -> None:
    target = _build_and_install(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    shipped = target / "organseg" / "_shipped"
    assert (shipped / "serve" / "local.yaml").is_file()
    assert not (shipped / "serve" / "local.yaml").is_symlink(), (
        "the wheel must carry the file itself"
    )

    help_run = _run(target, elsewhere, "-m", "organseg.cli", "serve", "--help")
    assert help_run.returncode == 0, help_run.stderr
    assert "--model-dir" in help_run.stdout

    check = _run(target, elsewhere, "-c", CHECK)
    assert check.returncode == 0, check.stderr
    facts = json.loads(check.stdout.strip().splitlines()[-1])
    assert Path(facts["organseg"]).is_relative_to(target)
    # The venv may live inside the repository (.venv, as `make` builds it): only its sources count.
    repo_sources = {ROOT.resolve(), (ROOT / "platform").resolve()}
    assert not any(Path(p).resolve() in repo_sources for p in facts["sys_path"] if p), (
        "the repository must not be importable in this test"
    )
    assert Path(facts["profile"]).is_relative_to(target)
    assert not facts["profile_is_link"]
    assert facts["import_path"] == "organseg.serve.app:build_app"
    repo_configs = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert facts["configs"] == repo_configs
    assert facts["tiny_members"] == ["dualtail", "attention-unet"]
