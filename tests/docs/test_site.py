"""The docs build as a site (MkDocs, Material theme) in strict mode: a broken link, a missing page or
a page left out of the navigation fails here, and so in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("material", reason="mkdocs-material is in the dev extra")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "-f", str(root / "mkdocs.yml"), "-d", str(site)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip


def test_the_docs_build_strictly(tmp_path: Path) -> None:
    done = _build(REPO_ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    pages = {
        p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*.html")
    }
    for doc in (REPO_ROOT / "docs").glob("*.md"):
        page = "index.html" if doc.stem == "index" else f"{doc.stem}/index.html"
        assert page in pages, f"{doc.name} is not on the site"


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "docs", copy / "docs")
    shutil.copy(REPO_ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "data.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    done = _build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr
