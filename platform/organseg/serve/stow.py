"""STOW-RS request bodies: ``multipart/related; type="application/dicom"`` → the received series.

Hand-parsed (the format is a boundary split, and the standard library's email parser would copy every
part several times); each part is checked for its media type and the DICOM marker before use. A body
holds one series, or the series of one study that a stacking ensemble reads together (T1 in-phase,
out-of-phase and T2-SPIR): parts are grouped by SeriesInstanceUID from their headers alone (a dual-echo
series stored under one UID is split by EchoTime, as the segment route's zips are), one study and one
patient are checked and the voxel limit is held over the whole body before any pixel is decoded.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from organseg.ensemble.assembly import RequestHints, SeriesInput, examination_split
from organseg.errors import DataError, RequestTooLarge
from organseg.io.dicom import split_series
from organseg.io.naming import series_label
from organseg.io.received import ReceivedSeries, read_received_series
from organseg.modalities import Modality

#: How refusals of a STOW-RS body say to fix it: no part names, no per-series modality to state.
STOW_HINTS = RequestHints(
    undecided="a STOW-RS body states no modality per series, so its headers must say the sequence "
    "(SeriesDescription, or EchoTime with MagneticFieldStrength)",
    add_to="to the STOW-RS body (its instances beside the others)",
    named_parts=False,
)
_HEADER_TAGS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "SeriesNumber",
    "InstanceNumber",
    "EchoTime",
    "Rows",
    "Columns",
    "NumberOfFrames",
]

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


@dataclass
class PartGroup:
    """The parts of one series (or of one echo of a multi-echo series), with their headers."""

    label: str  # "series uid:…" (+ the echo when a UID holds several) for messages
    parts: list[bytes] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    def order(self) -> tuple[int, int, str]:
        """SeriesNumber, then first InstanceNumber: the order messages list series in."""
        return (_number(self.headers, "SeriesNumber"), _number(self.headers, "InstanceNumber"),
                self.label)  # fmt: skip


def _number(headers: list[Dataset], keyword: str) -> int:
    values = []
    for ds in headers:
        try:
            values.append(int(str(ds.get(keyword, "") or "")))
        except ValueError:
            continue
    return min(values, default=1 << 30)


def _header(number: int, data: bytes) -> Dataset:
    """The part's header (no pixels); a damaged one names the part by number, never a value."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        for keyword in _HEADER_TAGS:  # values convert on first access: a damaged one fails here
            ds.get(keyword)
        return ds
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(
            f"multipart part {number} has an unreadable DICOM header ({type(exc).__name__})"
        ) from None


def group_parts(parts: list[bytes]) -> list[PartGroup]:
    """The parts grouped by SeriesInstanceUID (and EchoTime within a UID), headers only."""
    entries: list[tuple[str, Dataset, bytes]] = []
    unplaced: list[int] = []
    for number, data in enumerate(parts, start=1):
        ds = _header(number, data)
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            unplaced.append(number)
        entries.append((uid, ds, data))
    series = len({uid for uid, _, _ in entries})
    if unplaced and series > 1:
        numbers = ", ".join(map(str, unplaced[:5])) + (", ..." if len(unplaced) > 5 else "")
        raise DataError(
            f"multipart part {numbers}: no SeriesInstanceUID (or a damaged header), so "
            f"{'it' if len(unplaced) == 1 else 'they'} cannot be assigned to one of the body's "
            f"{series - 1} series"
        )
    groups = []
    for echo, split, members in split_series(entries):
        uid = str(members[0][0].get("SeriesInstanceUID") or "")
        group = PartGroup(series_label(uid=uid, echo=echo if split else None))
        group.parts = [data for _, data in members]
        group.headers = [ds for ds, _ in members]
        groups.append(group)
    return sorted(groups, key=PartGroup.order)


def check_one_study(groups: list[PartGroup]) -> None:
    """Refuse a body mixing studies or patients (values are compared, never echoed), from the
    headers before any pixel is decoded: the rule of :func:`examination_split`."""
    split = examination_split(
        [
            (g.label, lambda key, g=g: [str(ds.get(key, "") or "") for ds in g.headers])
            for g in groups
        ]
    )
    if split is not None:
        keyword, what, plural, series = split
        listed = "; ".join(f"{what} {k}: {', '.join(labels)}" for k, labels in enumerate(series, 1))
        raise DataError(
            f"the body holds instances of {len(series)} {plural} ({keyword} differs: {listed}); "
            f"post the series of one {what} per request"
        )


def _voxels(group: PartGroup) -> int:
    try:
        return sum(
            int(ds.get("Rows") or 0)
            * int(ds.get("Columns") or 0)
            * max(1, int(ds.get("NumberOfFrames") or 1))
            for ds in group.headers
        )
    except (TypeError, ValueError):
        raise DataError(f"{group.label}: Rows, Columns or NumberOfFrames is not a number") from None


def check_voxels(groups: list[PartGroup], max_voxels: int) -> None:
    """The voxel limit over the whole body, from the headers (nothing decoded yet)."""
    counts = [_voxels(g) for g in groups]
    total = sum(counts)
    if total > max_voxels:
        listed = ", ".join(f"{g.label}: {n}" for g, n in zip(groups, counts, strict=True))
        raise RequestTooLarge(
            f"the body's {len(groups)} series hold {total} voxels ({listed}); "
            f"the limit is {max_voxels}"
        )


def check_single(groups: list[PartGroup], single_only: str | None) -> None:
    """A body of several series for an ensemble that reads one: refused before decoding."""
    if single_only and len(groups) > 1:
        listed = ", ".join(g.label for g in groups)
        raise DataError(
            f"the body holds {len(groups)} series ({listed}); {single_only}, so post one series "
            "per request"
        )


def read_groups(groups: list[PartGroup], max_voxels: int) -> list[ReceivedSeries]:
    """Each group read as a received series (geometry order, anonymous, PHI-redacted errors), the
    voxel budget shrinking as series are decoded; each group's files live only while it is read."""
    received: list[ReceivedSeries] = []
    used = 0
    with tempfile.TemporaryDirectory(prefix="organseg-stow-") as tmp:
        for k, group in enumerate(groups):
            folder = Path(tmp) / f"series-{k:03d}"
            folder.mkdir()
            for n, data in enumerate(group.parts):
                (folder / f"{n:05d}.dcm").write_bytes(data)
            series = read_received_series(folder, group.label, max(1, max_voxels - used))
            shutil.rmtree(folder)
            used += int(np.prod(series.volume.shape, dtype=np.int64))
            received.append(series)
    return received


def series_from_parts(
    parts: list[bytes], max_voxels: int, single_only: str | None = None
) -> list[ReceivedSeries]:
    """The body's series, decoded; ``single_only`` (why the ensemble reads one series) refuses
    several before any pixel is decoded."""
    groups = group_parts(parts)
    check_one_study(groups)
    check_single(groups, single_only)
    check_voxels(groups, max_voxels)
    return read_groups(groups, max_voxels)


def series_inputs(received: list[ReceivedSeries], modality: str | None) -> list[SeriesInput]:
    """The received series as the router's inputs; a stated modality fits one series only."""
    if len(received) > 1 and modality:
        raise DataError(
            f"the body holds {len(received)} series and the modality parameter names one; each "
            "series of a STOW-RS body is routed by its own headers: leave modality out"
        )
    return [SeriesInput(r.volume, r.label, "stow", modality) for r in received]


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
    "parameters": [
        {
            "name": "modality",
            "in": "query",
            "required": False,
            "description": "The modality of a one-series body whose headers do not say it (they "
            "must not contradict it); a body of several series is routed by each series' headers.",
            "schema": {"type": "string", "enum": [m.value for m in Modality.known()]},
        }
    ],
    "requestBody": {
        "required": True,
        "description": "DICOMweb STOW-RS: the Part-10 instances of one CT or MR series, one per "
        "part, in any order. For a model that stacks series (`t1_mode: stack`, and `t2_channel`; "
        "GET /v1/models says which) the body holds the T1 in-phase and out-of-phase series (and "
        "the T2-SPIR) of one study together: parts are grouped by SeriesInstanceUID and each "
        "series is routed by its own headers. Refused (4xx, naming series by a hash of their UID "
        "and by modality): instances of several studies or patients, several series for a model "
        "that reads one, a series missing, doubled or not used by the model, a series whose "
        "sequence the headers do not establish. The byte and voxel limits hold for the whole "
        "body.",
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
    },
}


def stow_responses() -> dict[int | str, dict]:
    """OpenAPI answers of ``POST /v1/studies``: the SEG or the JSON report, and the documented errors."""
    from organseg.serve.http_schema import SEGMENT_ERRORS, ErrorBody

    answers: dict[int | str, dict] = {
        200: {
            "description": "The DICOM-SEG over the posted series (for stacked series: over the "
            "T1 in-phase series, whose grid the labels lie on, referencing its instances), or "
            "(Accept: application/json) the prediction report with `series` (each posted series' "
            "role, modality and UID hash) and `answers_for`.",
            "content": {
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    }
    for code, description in SEGMENT_ERRORS.items():
        answers[code] = {"model": ErrorBody, "description": description}
    return answers
