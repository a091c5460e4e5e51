"""The fenced code blocks of the README and the docs, with the marker that says who runs each.

Every ``bash``/``console``/``python`` block is preceded by one HTML comment (invisible on the site and
on GitHub): ``<!-- docs-test: tests/PATH.py -->`` names the test that runs it, and
``<!-- docs-test: not run: REASON -->`` says why it cannot run here (a Kubernetes cluster, a hospital
PACS, minutes of benchmark load).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO_ROOT

RUNNABLE = ("bash", "sh", "console", "python")
MARKER = re.compile(r"<!--\s*docs-test:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    heading: str
    lang: str
    text: str
    marker: str | None

    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line} ({self.heading})"


def doc_files() -> list[Path]:
    return [
        REPO_ROOT / "README.md",
        REPO_ROOT / "CONTRIBUTING.md",
        *sorted((REPO_ROOT / "docs").glob("*.md")),
    ]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with its heading and the marker on the line before it."""
    found, heading, lines = [], "", path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        opening = FENCE.match(line)
        if opening is None:
            i += 1
            continue
        indent, body = opening.group("indent"), []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j][len(indent) :])
            j += 1
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.search(previous)
        text = "\n".join(body) + "\n"
        lang = opening.group("lang")
        found.append(Block(path, i + 1, heading, lang, text, marker.group(1) if marker else None))
        i = j + 1
    return found


def block_under(path: Path, heading: str, lang: str = "bash") -> Block:
    """The first ``lang`` block under ``heading`` (a heading's text, without the #s)."""
    for block in blocks(path):
        if block.heading == heading and block.lang == lang:
            return block
    raise AssertionError(f"no {lang} block under {heading!r} in {path}")


def command_lines(block: Block) -> list[list[str]]:
    """The block's commands as argument lists: comments dropped, backslash continuations joined."""
    joined = block.text.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]
