"""Small file operations that work on a local folder or any URI Ray Train can store runs at.

Ray itself reaches ``s3://``/``gs://``/... through ``pyarrow.fs``; we use the same layer so the bookkeeping
next to Ray's runs (which members finished) lives wherever the runs live. Streams are opened by
:func:`organseg.uri.input_stream` / :func:`~organseg.uri.output_stream`: the bytes as stored, never
(de)compressed because a name ends in ``.gz``.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import pyarrow.fs as pafs

from organseg.uri import input_stream, is_uri, output_stream


def _resolve(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    if is_uri(uri_or_path):
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), str(Path(uri_or_path).resolve())


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts) if is_uri(base) else str(Path(base, *parts))


def exists(uri_or_path: str) -> bool:
    fs, path = _resolve(uri_or_path)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_bytes(uri_or_path: str) -> bytes:
    fs, path = _resolve(uri_or_path)
    with input_stream(fs, path) as stream:
        return stream.read()


def read_text(uri_or_path: str) -> str:
    return read_bytes(uri_or_path).decode()


def write_text(uri_or_path: str, text: str) -> None:
    write_bytes(uri_or_path, text.encode())


def write_bytes(uri_or_path: str, data: bytes) -> None:
    fs, path = _resolve(uri_or_path)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with output_stream(fs, path) as stream:
        stream.write(data)


def delete_dir(uri_or_path: str) -> None:
    fs, path = _resolve(uri_or_path)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
