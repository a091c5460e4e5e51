"""What to segment when a user points at a path: one series, or each series of a CHAOS case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from organseg.errors import DataError
from organseg.io import discover_cases, load_case, read_any
from organseg.io.readers import _looks_like_chaos
from organseg.io.volume import Modality, Volume


@dataclass
class PredictInput:
    """One thing to segment; ``partner`` is the T1 out-phase series that pairs with an in-phase one."""

    name: str
    image: Volume
    partner: Volume | None = None


def resolve_inputs(
    path: Path | str, modality: Modality | str | None = None, stack_t1: bool = False
) -> list[PredictInput]:
    """Volumes to segment from a file, a DICOM folder or a CHAOS case/dataset folder.

    A CHAOS MR case yields its T2-SPIR series and its T1 series: one stacked input (in + out) when the
    ensemble stacks T1, else both phases separately. ``modality`` narrows a CHAOS folder to one series kind,
    or sets the modality of a file that does not record it.
    """
    path = Path(path)
    if path.is_dir() and _looks_like_chaos(path):
        refs = discover_cases(path)
        if modality is not None:
            wanted = Modality.parse(modality)
            keep = (
                {wanted, Modality.MR_T1_OUT}
                if stack_t1 and wanted is Modality.MR_T1_IN
                else {wanted}
            )
            refs = [r for r in refs if r.modality in keep]
        if not refs:
            raise DataError(
                f"{path}: no series to segment" + (f" for modality {modality}" if modality else "")
            )
        images = {r.case_id: load_case(r, with_label=False).image for r in refs}
        inputs = []
        for ref in refs:
            image = images[ref.case_id]
            if stack_t1 and ref.modality is Modality.MR_T1_OUT:
                continue  # consumed as the partner of its in-phase series
            partner = None
            if stack_t1 and ref.modality is Modality.MR_T1_IN:
                partner = images.get(ref.case_id.replace("T1DUAL-in", "T1DUAL-out"))
                if partner is None:
                    raise DataError(
                        f"{ref.image_dir}: T1 in-phase has no out-phase partner to stack with"
                    )
            name = (
                ref.case_id.replace("/T1DUAL-in", "/T1DUAL") if partner is not None else ref.case_id
            )
            inputs.append(PredictInput(name.replace("/", "_"), image, partner))
        return inputs
    image = read_any(path, modality)
    return [PredictInput(_stem(path), image)]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
