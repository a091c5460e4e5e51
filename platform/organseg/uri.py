"""Telling a URI (``s3://bucket/runs``) from a local path, the one way every module does it; showing
one without its credentials, and reading one through pyarrow.fs (:func:`input_stream` and
:func:`output_stream` are the one way to open a pyarrow.fs stream: the bytes as stored)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from organseg.errors import DataError


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (s3, gs, file, ...), which Ray reaches through pyarrow.fs;
    False for local paths, which organseg resolves and creates itself."""
    return "://" in str(location)


def shown_uri(uri: str) -> str:
    """``uri`` as messages and tables may show it: without the credentials a URI may carry
    (``s3://KEY:SECRET@bucket/...``, which pyarrow accepts) and without its query
    (``?session_token=...``, ``endpoint_override=...``)."""
    scheme, sep, rest = str(uri).partition("://")
    if not sep:
        return str(uri)
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path.split('?', 1)[0]}"


@contextlib.contextmanager
def open_uri(uri: str) -> Iterator[BinaryIO]:
    """Read ``uri`` (``s3://``, ``gs://``, ...) through pyarrow.fs, as Ray and run storage reach
    it. Failures are a :class:`DataError` naming the URI as :func:`shown_uri` shows it (never a
    credential): no such object, no such bucket, or what the storage answered."""
    import pyarrow.fs as pafs

    shown = shown_uri(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # pyarrow: ArrowInvalid (a ValueError) for a bad URI
        raise DataError(f"{shown}: not a URI pyarrow can open ({_scrubbed(exc, uri)})") from None
    try:
        stream = input_stream(fs, path)
    except FileNotFoundError:
        bucket = path.split("/", 1)[0]
        if bucket != path and _missing(fs, bucket):
            raise DataError(f"{shown}: no such bucket {bucket!r}") from None
        raise DataError(f"{shown}: no such object") from None
    except OSError as exc:
        raise DataError(f"{shown}: cannot read it ({_scrubbed(exc, uri)})") from None
    with stream:
        yield stream


def input_stream(fs: Any, path: str) -> Any:
    """``fs.open_input_stream`` reading the bytes as stored. pyarrow's default (``compression=
    "detect"``) un-gzips any ``.gz`` name, so a ``.nii.gz`` volume or checkpoint would arrive
    decompressed and no longer be the file that was written."""
    return fs.open_input_stream(path, compression=None)


def output_stream(fs: Any, path: str) -> Any:
    """``fs.open_output_stream`` writing the bytes as given (pyarrow's default would gzip them a
    second time under a ``.gz`` name; see :func:`input_stream`)."""
    return fs.open_output_stream(path, compression=None)


def _missing(fs: Any, path: str) -> bool:
    import pyarrow.fs as pafs

    try:
        return fs.get_file_info(path).type == pafs.FileType.NotFound
    except OSError:
        return False


def _scrubbed(exc: BaseException, uri: str) -> str:
    """The first line of a storage error, without any credential it might echo: the URI's own
    (user info, query) and the standard AWS/GCS variables' values."""
    import os

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    secrets = [uri.partition("://")[2].partition("/")[0].rpartition("@")[0]]
    secrets.append(uri.partition("?")[2])
    secrets += [os.environ.get(k, "") for k in _CREDENTIAL_VARIABLES]
    parts = {p for s in secrets for p in (s, *re.split(r"[&:=]", s)) if len(p) >= 4}
    for part in sorted(parts, key=len, reverse=True):  # longest first: no half-hidden secret
        text = text.replace(part, "***")
    return text


_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "GOOGLE_APPLICATION_CREDENTIALS")  # fmt: skip
