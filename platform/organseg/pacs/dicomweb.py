"""DICOMweb client side: fetch a series by WADO-RS, segment it, store the results by STOW-RS.

Used by ``organseg predict --dicomweb URL --study UID [--series UID] [--stow]``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from organseg.ensemble.results import build_results, to_bytes
from organseg.errors import DataError, OrgansegError
from organseg.io.naming import series_label
from organseg.io.privacy import short_uid
from organseg.io.received import SEGMENTED_MODALITIES, read_received_series
from organseg.pacs.delivery import StowDestination
from organseg.pacs.node import Segmenter

log = logging.getLogger("organseg.pacs")


@dataclass
class DicomwebResult:
    series: str  # hashed UID
    modality: str
    slices: int
    volumes_ml: dict[str, float]
    results: list[str] = field(default_factory=list)  # "SEG uid:…" per result instance
    files: list[str] = field(default_factory=list)
    stored: bool = False


def _client(url: str):
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"))


def _errors(url: str):
    """Map dicomweb-client/requests failures to one readable line (never a traceback)."""
    import requests

    class _Ctx:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if isinstance(exc, requests.HTTPError):
                status = exc.response.status_code if exc.response is not None else "?"
                raise OrgansegError(f"{url} answered HTTP {status}") from None
            if isinstance(exc, requests.RequestException):
                raise OrgansegError(f"cannot reach {url} ({type(exc).__name__})") from None
            return False

    return _Ctx()


def series_of_study(url: str, study: str) -> list[str]:
    """SeriesInstanceUIDs of the study's CT/MR series (others are listed in the log and skipped)."""
    with _errors(url):
        found = _client(url).search_for_series(study_instance_uid=study)
    keep = []
    for item in found:
        uid = item.get("0020000E", {}).get("Value", [None])[0]
        modality = item.get("00080060", {}).get("Value", [""])[0]
        if uid and modality in SEGMENTED_MODALITIES:
            keep.append(uid)
        elif uid:
            log.info("%s skipped: modality %s", series_label(uid=uid), modality or "missing")
    if not keep:
        raise DataError(f"study {short_uid(study)}: no CT or MR series on {url}")
    return keep


def fetch_series(url: str, study: str, series: str, folder: Path) -> int:
    """Write the series' instances into ``folder`` (one file each); returns how many."""
    with _errors(url):
        datasets = _client(url).retrieve_series(
            study_instance_uid=study, series_instance_uid=series
        )
    if not datasets:
        raise DataError(f"{series_label(uid=series)}: {url} returned no instances")
    for n, ds in enumerate(datasets):
        ds.save_as(folder / f"{n:05d}.dcm", enforce_file_format=True)
    return len(datasets)


def predict_dicomweb(
    url: str,
    study: str,
    series: str | None,
    segment: Segmenter,
    outputs: tuple[str, ...] = ("seg",),
    stow: bool = False,
    out: Path | None = None,
    modality: str | None = None,
) -> list[DicomwebResult]:
    """Segment one series (or every CT/MR series of the study); store and/or write the results."""
    if not stow and out is None:
        raise OrgansegError("with --dicomweb, give --stow (store back) and/or --output FOLDER")
    chosen = [series] if series else series_of_study(url, study)
    done = []
    for uid in chosen:
        with tempfile.TemporaryDirectory(prefix="organseg-wado-") as tmp:
            fetch_series(url, study, uid, Path(tmp))
            received = read_received_series(Path(tmp))
            prediction = segment(received.volume, modality)
            results = build_results(
                received.volume, prediction, received.datasets, received.label, outputs
            )
        entry = DicomwebResult(
            series=short_uid(uid),
            modality=prediction.modality.value,
            slices=len(received.datasets),
            volumes_ml=dict(prediction.volumes_ml),
            results=[f"{r.Modality} {short_uid(r.SOPInstanceUID)}" for r in results],
        )
        if out is not None:
            folder = Path(out) / short_uid(uid).replace(":", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for n, result in enumerate(results):
                path = folder / f"{n:03d}-{result.Modality}.dcm"
                path.write_bytes(to_bytes(result))
                entry.files.append(str(path))
        if stow:
            StowDestination(url).send(results)
            entry.stored = True
        done.append(entry)
    return done
