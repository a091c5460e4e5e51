"""Atomic file writes: the one way organseg replaces a file (or a folder of results), so that a reader
(or a crash) never sees half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(
    path: Path | str,
    suffix: str = ".tmp",
    private: bool = False,
    tmp_dir: Path | str | None = None,
    durable: bool = False,
) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without
    an error, removed in any case. The name is ``.NAME.<unique>SUFFIX`` (a writer that picks its format
    by extension, e.g. SimpleITK, passes the format's suffix). ``private`` creates the file first,
    readable by its owner only (outputs that hold patient images); otherwise the writer creates it
    with the usual permissions.

    ``tmp_dir`` (on the same file system) holds the temporary instead, created private: a folder whose
    files are read as they appear (the DICOM node's spool) never shows one, and a crash leaves it where
    a restart sweeps it. ``durable`` flushes the file to disk before the rename (fsync), so what was
    acknowledged survives a power loss."""
    path = Path(path)
    if private or tmp_dir is not None:
        where = path.parent if tmp_dir is None else Path(tmp_dir)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=where)
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(folder: Path | str, tmp_dir: Path | str | None = None) -> Iterator[Path]:
    """A private staging folder to fill; it replaces ``folder`` when the block ends without an error
    (an existing ``folder`` is removed first) and is removed in any case, so a folder of results
    appears whole or not at all. It is ``.NAME-<unique>`` beside ``folder``, or in ``tmp_dir`` (on
    the same file system: a folder swept at start, as the DICOM node's spool keeps)."""
    folder = Path(folder)
    where = folder.parent if tmp_dir is None else Path(tmp_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=where))
    try:
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_bytes_atomic(
    path: Path | str, data: bytes, tmp_dir: Path | str | None = None, durable: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`, with its ``tmp_dir`` and
    ``durable``)."""
    with atomic_path(path, suffix=".part", tmp_dir=tmp_dir, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
