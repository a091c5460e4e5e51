"""Telling a URI (``s3://bucket/runs``) from a local path, the one way every module does it."""

from __future__ import annotations

from pathlib import Path


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (s3, gs, file, ...), which Ray reaches through pyarrow.fs;
    False for local paths, which organseg resolves and creates itself."""
    return "://" in str(location)
