"""A watchdog that removes the local Ray cluster a process started once that process is gone.

``ray.shutdown()`` stops a local cluster on a clean exit, but nothing does when the starting process is
SIGKILLed (or dies with its parent): GCS, raylet, the dashboard and its agents, and every worker are
left running. The watchdog runs in its own session, keeps a list of the owner's descendant processes
(the Ray ones), and when the owner disappears terminates them (SIGTERM, then SIGKILL after a grace
period). It exits quietly when the owner exits cleanly and its Ray processes are gone already.

Run as ``python -m organseg.serve.ops.reaper OWNER_PID``; :func:`start` does that.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 5.0


def start(owner_pid: int | None = None) -> subprocess.Popen:
    """Start the watchdog for ``owner_pid`` (default: this process), detached from our signals."""
    return subprocess.Popen(
        [sys.executable, "-m", "organseg.serve.ops.reaper", str(owner_pid or os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal must not kill the watchdog first
        close_fds=True,
    )


def _descendants(owner: psutil.Process, me: int) -> dict[int, float]:
    found = {}
    try:
        for child in owner.children(recursive=True):
            if child.pid != me:
                found[child.pid] = child.create_time()
    except psutil.Error:
        pass
    return found


def _terminate(known: dict[int, float]) -> None:
    procs = []
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:  # not a reused pid
                procs.append(proc)
        except psutil.Error:
            continue
    # Ray's processes may have spawned more since the last look (workers of a dying raylet).
    for proc in list(procs):
        with contextlib.suppress(psutil.Error):
            procs.extend(proc.children(recursive=True))
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def watch(owner_pid: int) -> None:
    me = os.getpid()
    try:
        owner = psutil.Process(owner_pid)
    except psutil.Error:
        return
    known: dict[int, float] = {}
    while _alive(owner):
        known.update(_descendants(owner, me))
        time.sleep(POLL_S)
    _terminate(known)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


if __name__ == "__main__":
    watch(int(sys.argv[1]))
