"""STOW-RS request bodies: ``multipart/related; type="application/dicom"`` → one received series.

Hand-parsed (the format is a boundary split, and the standard library's email parser would copy every
part several times); each part is checked for its media type and the DICOM marker before use.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from organseg.errors import DataError
from organseg.pacs.series import ReceivedSeries, read_received_series

_PARAM = re.compile(r';\s*([A-Za-z-]+)\s*=\s*("([^"]*)"|[^;\s]+)')


def content_type_params(content_type: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` → (media type, parameters)."""
    media = content_type.split(";", 1)[0].strip().lower()
    params = {
        m[1].lower(): (m[3] if m[3] is not None else m[2]) for m in _PARAM.finditer(content_type)
    }
    return media, params


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The DICOM parts of a STOW-RS body; clear errors for anything else."""
    media, params = content_type_params(content_type)
    if media != "multipart/related":
        raise DataError(
            'send the series as multipart/related; type="application/dicom" (STOW-RS), '
            f"not {media or 'no content type'}"
        )
    kind = params.get("type", "application/dicom").lower()
    if kind != "application/dicom":
        raise DataError(f'multipart type {kind!r} is not accepted; use type="application/dicom"')
    boundary = params.get("boundary")
    if not boundary:
        raise DataError("multipart/related content type without a boundary parameter")
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise DataError("the multipart body holds no parts (boundary not found)")
    parts = []
    for number, chunk in enumerate(chunks[1:], start=1):
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise DataError(f"multipart part {number} has no header/body separator")
        headers = head.decode("latin-1").lower()
        part_type = re.search(r"content-type:\s*([^\r\n;]+)", headers)
        if part_type and part_type[1].strip() != "application/dicom":
            raise DataError(
                f"multipart part {number} is {part_type[1].strip()}, not application/dicom"
            )
        if data.endswith(b"\r\n"):
            data = data[:-2]
        if len(data) < 132 or data[128:132] != b"DICM":
            raise DataError(f"multipart part {number} is not a DICOM Part-10 file")
        parts.append(data)
    if not parts:
        raise DataError("the multipart body holds no DICOM instances")
    return parts


def series_from_parts(parts: list[bytes]) -> ReceivedSeries:
    """The instances (one series) as a volume in geometry order with their headers."""
    with tempfile.TemporaryDirectory(prefix="organseg-stow-") as tmp:
        for n, data in enumerate(parts):
            (Path(tmp) / f"{n:05d}.dcm").write_bytes(data)
        return read_received_series(Path(tmp))


def encode_multipart(
    datasets_bytes: list[bytes], boundary: str = "organseg-boundary"
) -> tuple[bytes, str]:
    """A STOW-RS body from Part-10 files (the client side, for tests and scripts)."""
    chunks = []
    for data in datasets_bytes:
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


#: OpenAPI request body of ``POST /v1/studies`` (the route reads the multipart body itself).
STOW_REQUEST_BODY: dict = {
    "requestBody": {
        "required": True,
        "description": "DICOMweb STOW-RS: the Part-10 instances of one CT or MR series, one per part.",
        "content": {
            "multipart/related": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "DICOM Part-10 files (any transfer syntax).",
                        }
                    },
                },
                "encoding": {"instances": {"contentType": "application/dicom"}},
            }
        },
    }
}


def stow_responses() -> dict[int | str, dict]:
    """OpenAPI answers of ``POST /v1/studies``: the SEG or the JSON report, and the documented errors."""
    from organseg.serve.http_schema import SEGMENT_ERRORS, ErrorBody

    answers: dict[int | str, dict] = {
        200: {
            "description": "The DICOM-SEG over the posted series, or (Accept: application/json) "
            "the prediction report.",
            "content": {
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    }
    for code, description in SEGMENT_ERRORS.items():
        answers[code] = {"model": ErrorBody, "description": description}
    return answers
