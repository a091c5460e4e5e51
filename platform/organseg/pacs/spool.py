"""The node's spool: every received instance is on disk (atomically) before it is acknowledged.

Layout under the spool root (file and folder names are hashes, never UIDs or patient data)::

    incoming/<series>/<instance>.dcm   instances still arriving (folder mtime = last arrival)
    work/<series>/                     a series claimed for segmentation (resumed after a restart)
    outbox/<series>/*.dcm              results built but not yet delivered (re-sent as they are)
    done/<series>.json                 delivered: what was sent, when
    quarantine/<series>-<n>/           a series that failed, with ``reason.txt``
    meta/<series>.json                 what grouping needs: the study (a hash) and the header's sequence

A stacked group (a study's T1 in- and out-of-phase series segmented together) keeps this: its series
are claimed into ``work`` one by one, its results go to the outbox of its primary series with a
``channels.json`` naming the others, and after delivery the others are marked done before the primary,
so a restart at any step resumes the group or re-delivers the same results. A channel series the model
also segments alone (T2-SPIR with a T2 member) has its results in that same outbox under its own file
names, and ``channels.json`` says which files are its (or why it was refused): the group's results are
still written, delivered and re-delivered as one unit.

A crash at any point leaves each series in exactly one of these places, so a restart resumes it; results
are written before delivery and keep their UIDs, so a re-sent result replaces itself in the PACS instead
of appearing twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from organseg.io.atomic import atomic_dir, write_bytes_atomic

_KINDS = ("incoming", "work", "outbox", "done", "quarantine", "tmp", "meta")
#: In an outbox: the keys of the series a stacked result used as channels and, per channel series
#: also segmented alone, its result files or the reason it was refused (not sent anywhere).
CHANNELS_FILE = "channels.json"


def key_of(uid: str) -> str:
    """File-system key of a UID (a hash: UIDs can embed site or device identifiers)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class SpooledEntry:
    """A series in ``work`` or ``incoming``: ``arrived`` is its last instance's time."""

    key: str
    place: str
    arrived: float
    info: dict
    done: bool


@dataclass(frozen=True)
class Quarantined:
    folder: Path
    reason: str


class Spool:
    """The spool folder; thread-safe between the receiving threads and the worker."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        for kind in _KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for stale in (self.root / "tmp").iterdir():  # half-written files of a crashed run
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        # A series interrupted by a restart gets a fresh quiet period: its sender may be resuming too,
        # and segmenting the part received so far would be a confident answer on half a series.
        for folder in (self.root / "incoming").iterdir():
            if folder.is_dir():
                os.utime(folder)

    def _dir(self, kind: str, key: str = "") -> Path:
        return self.root / kind / key if key else self.root / kind

    def _write(self, path: Path, data: bytes) -> None:
        """The whole file or nothing, on disk before it counts (an instance is acknowledged after
        this): written in ``tmp`` (swept at start) and renamed into place."""
        write_bytes_atomic(path, data, tmp_dir=self._dir("tmp"), durable=True)

    # -- receiving -------------------------------------------------------------------------------------
    def add(self, series_uid: str, sop_uid: str, data: bytes, info: dict | None = None) -> Path:
        """Store one instance (a whole DICOM Part-10 file) of ``series_uid``; duplicates replace.
        ``info`` (hashes and header facts only, never raw UIDs) is kept once per series for grouping."""
        key = key_of(series_uid)
        with self._lock:
            folder = self._dir("incoming", key)
            folder.mkdir(exist_ok=True)
            meta = self._dir("meta", f"{key}.json")
            if info is not None and not meta.is_file():
                self._write(meta, json.dumps(info).encode())
            path = folder / f"{key_of(sop_uid)}.dcm"
            self._write(path, data)
            os.utime(folder)  # the folder's mtime marks the series' last arrival
        return path

    # -- the worker's view -----------------------------------------------------------------------------
    def ready(self, quiet_s: float, now: float | None = None) -> list[str]:
        """Series keys to process: resumed work first, then incoming series quiet for ``quiet_s``."""
        now = time.time() if now is None else now
        keys = sorted(p.name for p in self._dir("work").iterdir() if p.is_dir())
        keys += sorted(
            p.name for p in self._dir("outbox").iterdir() if p.is_dir() and p.name not in keys
        )
        for folder in sorted(self._dir("incoming").iterdir()):
            quiet = folder.is_dir() and now - folder.stat().st_mtime >= quiet_s
            if quiet and folder.name not in keys:
                keys.append(folder.name)
        return keys

    def series(self) -> list[SpooledEntry]:
        """Every claimed and incoming series with its grouping facts, skipping those whose results
        already wait in an outbox (as primary or as a channel): delivery finishes them."""
        pending = set()
        for folder in self._dir("outbox").iterdir():
            pending.add(folder.name)
            pending.update(self.channels_of(folder.name))
        found: dict[str, SpooledEntry] = {}
        for kind in ("work", "incoming"):
            for folder in sorted(self._dir(kind).iterdir()):
                if not folder.is_dir() or folder.name in pending or folder.name in found:
                    continue
                try:
                    arrived = folder.stat().st_mtime
                except FileNotFoundError:  # claimed or quarantined meanwhile
                    continue
                found[folder.name] = SpooledEntry(
                    folder.name, kind, arrived, self.info(folder.name), self.is_done(folder.name)
                )
        return list(found.values())

    def info(self, key: str) -> dict:
        """The grouping facts stored with the series' first instance (empty when there are none)."""
        try:
            return json.loads(self._dir("meta", f"{key}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def channels_of(self, key: str) -> list[str]:
        """The series a stacked result in ``key``'s outbox used as channels."""
        return [str(k) for k in self.channel_facts(key).get("channels", [])]

    def channel_facts(self, key: str) -> dict:
        """``key``'s outbox ``channels.json`` (empty when it holds no stacked result)."""
        try:
            data = json.loads((self._dir("outbox", key) / CHANNELS_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def claim(self, key: str) -> Path | None:
        """Move a quiet incoming series to ``work`` (under the lock: no instance lands mid-move)."""
        with self._lock:
            work = self._dir("work", key)
            incoming = self._dir("incoming", key)
            if work.is_dir():
                if incoming.is_dir():  # instances that arrived while it was being processed
                    for path in incoming.iterdir():
                        os.replace(path, work / path.name)
                    incoming.rmdir()
                return work
            if not incoming.is_dir():
                return None
            os.replace(incoming, work)
            return work

    def is_done(self, key: str) -> bool:
        return self._dir("done", f"{key}.json").is_file()

    def outbox(self, key: str) -> Path | None:
        folder = self._dir("outbox", key)
        return folder if folder.is_dir() else None

    def put_outbox(self, key: str, files: dict[str, bytes]) -> Path:
        """Write the series' results as one unit: a folder that appears whole or not at all."""
        target = self._dir("outbox", key)
        with atomic_dir(target, tmp_dir=self._dir("tmp")) as staging:
            for name, data in files.items():
                (staging / name).write_bytes(data)
        return target

    def finish(self, key: str, record: dict, keep_results: bool = False) -> None:
        """Mark the series delivered, then drop its instances (and results, unless ``keep_results``:
        with no destination, ``results/<series>/`` is where they stay)."""
        if keep_results and (outbox := self._dir("outbox", key)).is_dir():
            target = self.root / "results" / key
            target.parent.mkdir(exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(outbox, target)
        self._write(self._dir("done", f"{key}.json"), json.dumps(record, indent=1).encode())
        shutil.rmtree(self._dir("outbox", key), ignore_errors=True)
        shutil.rmtree(self._dir("work", key), ignore_errors=True)

    def quarantine(self, key: str, reason: str) -> Quarantined:
        """Move the series (work or incoming) to ``quarantine`` with ``reason.txt`` beside it."""
        with self._lock:
            n = 1
            while (target := self._dir("quarantine", f"{key}-{n}")).exists():
                n += 1
            target.mkdir()
            for kind in ("work", "incoming"):
                source = self._dir(kind, key)
                if source.is_dir():
                    for path in source.iterdir():
                        os.replace(path, target / path.name)
                    source.rmdir()
            shutil.rmtree(self._dir("outbox", key), ignore_errors=True)
            (target / "reason.txt").write_text(reason.rstrip() + "\n")
        return Quarantined(target, reason)

    def quarantined(self) -> list[Quarantined]:
        found = []
        for folder in sorted(self._dir("quarantine").iterdir()):
            reason = folder / "reason.txt"
            if reason.is_file():
                found.append(Quarantined(folder, reason.read_text().strip()))
        return found
