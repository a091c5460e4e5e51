"""Private temporary folders per replica process, and sweeping those a killed process left behind.

Decoders that need files (SimpleITK reads DICOM series and some formats only from disk) write into
``tempfile``'s directory and remove their folder on every exit path. A SIGKILLed replica cannot, so each
replica process points ``tempfile`` at its own 0700 folder ``organseg-replica-<pid>`` and, when a replica
starts, removes every such folder whose process is gone: uploaded patient data never outlives the
process that received it by more than a replica restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "organseg-replica-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(root: Path | str | None = None) -> list[Path]:
    """Remove the private folders of processes that no longer exist; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        suffix = folder.name[len(PREFIX) :]
        if not suffix.isdigit() or int(suffix) == os.getpid() or _alive(int(suffix)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def use_private_tempdir(root: Path | str | None = None) -> Path:
    """Sweep, then make ``tempfile`` in this process use ``<root>/organseg-replica-<pid>`` (mode 0700)."""
    root = Path(root or tempfile.gettempdir())
    sweep(root)
    folder = root / f"{PREFIX}{os.getpid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    tempfile.tempdir = str(folder)
    return folder
