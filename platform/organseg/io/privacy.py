"""What a log line or an error may say about a patient: nothing.

DICOM headers carry names, IDs and birth dates; the node logs only truncated hashes of UIDs, and every
message built from a third-party exception passes through :func:`redact` with the values of the series
at hand, because libraries quote header values in their errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydicom.dataset import Dataset

#: Header attributes whose values must never appear in a log line, an error or a file name.
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "ReferringPhysicianName",
    "InstitutionName",
)


def short_uid(uid: str | None) -> str:
    """A stable 10-hex-digit tag for a UID: enough to follow one series through the logs."""
    if not uid:
        return "uid:none"
    return "uid:" + hashlib.sha256(str(uid).encode()).hexdigest()[:10]


def phi_values(datasets: Iterable[Dataset]) -> set[str]:
    """The identifying strings in ``datasets`` (and their name parts), for :func:`redact`."""
    values: set[str] = set()
    for ds in datasets:
        for keyword in PHI_KEYWORDS:
            value = ds.get(keyword)
            if value in (None, ""):
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                text = str(item).strip()
                if len(text) >= 3:
                    values.add(text)
                values.update(p.strip() for p in text.split("^") if len(p.strip()) >= 3)
    return values


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with every identifying value replaced by ``[redacted]`` (longest first)."""
    for value in sorted(set(values), key=len, reverse=True):
        if value:
            text = text.replace(value, "[redacted]")
    return text
