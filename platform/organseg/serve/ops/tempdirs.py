"""Private temporary folders per replica process, and sweeping those a killed process left behind.

Decoders that need files (SimpleITK reads DICOM series and some formats only from disk) write into
``tempfile``'s directory and remove their folder on every exit path. A SIGKILLed replica cannot, so each
replica process points ``tempfile`` at its own 0700 folder ``organseg-replica-<pid>`` and, when a replica
starts, removes every such folder whose process is gone: uploaded patient data never outlives the
process that received it by more than a replica restart. A killed process may linger as a zombie (or
not be gone yet) when the new replica starts, so replicas sweep again now and then
(:func:`sweep_now_and_then`), and a zombie, or a new process that reused the pid after the folder was
made, counts as gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

PREFIX = "organseg-replica-"
#: How often :func:`sweep_now_and_then` sweeps at most.
SWEEP_EVERY_S = 30.0
_last_sweep = [0.0]


def _alive(pid: int, folder: Path | None = None) -> bool:
    """Whether ``pid`` still runs the process that made ``folder`` (zombies and reused pids do not)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if folder is not None and proc.create_time() > folder.stat().st_mtime + 1.0:
            return False  # the pid was reused by a process younger than the folder
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):
        return True  # cannot tell: keep the folder
    return True


def sweep(root: Path | str | None = None) -> list[Path]:
    """Remove the private folders of processes that no longer exist; returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        suffix = folder.name[len(PREFIX) :]
        if not suffix.isdigit() or int(suffix) == os.getpid() or _alive(int(suffix), folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    _last_sweep[0] = time.monotonic()
    return removed


def sweep_now_and_then(root: Path | str | None = None) -> None:
    """:func:`sweep`, at most every :data:`SWEEP_EVERY_S` (cheap enough to call on every request)."""
    if time.monotonic() - _last_sweep[0] >= SWEEP_EVERY_S:
        sweep(root)


def use_private_tempdir(root: Path | str | None = None) -> Path:
    """Sweep, then make ``tempfile`` in this process use ``<root>/organseg-replica-<pid>`` (mode 0700)."""
    root = Path(root or tempfile.gettempdir())
    sweep(root)
    folder = root / f"{PREFIX}{os.getpid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    tempfile.tempdir = str(folder)
    return folder
