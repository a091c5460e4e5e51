"""Atomic file writes: the one way organseg replaces a file, so that a reader (or a crash) never sees
half of one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp", private: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without
    an error, removed in any case. The name is ``.NAME.<unique>SUFFIX`` (a writer that picks its format
    by extension, e.g. SimpleITK, passes the format's suffix). ``private`` creates the file first,
    readable by its owner only (outputs that hold patient images); otherwise the writer creates it
    with the usual permissions."""
    path = Path(path)
    if private:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    else:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
