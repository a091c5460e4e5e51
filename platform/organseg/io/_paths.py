"""File-name ordering shared by every series reader.

CHAOS defines slice order as file-name order. Names such as ``IMG-0004-00010`` and ``i0010,0000b`` sort the
same lexically and naturally, but a user's ``slice2.dcm``/``slice10.dcm`` would not, so we sort naturally.
"""

from __future__ import annotations

import re
from pathlib import Path

_DIGITS = re.compile(r"(\d+)")


def natural_key(path: Path | str) -> tuple:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    name = Path(path).name
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name))


def listed_files(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Visible regular files of ``folder`` in natural file-name order, optionally filtered by suffix."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (suffixes is None or p.suffix.lower() in suffixes)
    ]
    return sorted(files, key=natural_key)
