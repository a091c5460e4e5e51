"""The DICOMweb branch of ``organseg predict`` (its own module so the predict command only hooks it in)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from organseg.errors import OrgansegError

if TYPE_CHECKING:
    from organseg.serve.connect import BackendChoice


def predict_dicomweb_command(
    url: str | None,
    study: str | None,
    series: str | None,
    stow: bool,
    out: Path | None,
    input_path: Path | None,
    choice: BackendChoice,
    modality: str | None,
    report: Path | None,
) -> None:
    """``organseg predict --dicomweb URL --study UID [--series UID] [--stow] [-o FOLDER]``; the backend
    is chosen as for files (``--local`` with its gate and device, or a served endpoint with its token)."""
    from organseg.cli._console import console
    from organseg.pacs.dicomweb import predict_dicomweb
    from organseg.serve.connect import open_backend

    if not url or not study:
        raise OrgansegError("--dicomweb URL and --study UID go together")
    if input_path is not None:
        raise OrgansegError("give either INPUT or --dicomweb, not both")
    segment = open_backend(choice).segment
    results = predict_dicomweb(url, study, series, segment, ("seg",), stow, out, modality)
    for entry in results:
        volumes = ", ".join(f"{k} {v:.1f} mL" for k, v in entry.volumes_ml.items())
        where = "stored by STOW-RS" if entry.stored else ", ".join(entry.files)
        console.print(
            f"series {entry.series}: {entry.modality}, {entry.slices} slices; {volumes}; "
            f"{', '.join(entry.results)} {where}",
            highlight=False,
            soft_wrap=True,
        )
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps([asdict(e) for e in results], indent=2))
