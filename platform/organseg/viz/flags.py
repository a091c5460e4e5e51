"""Plain-language flags that ask for a second look at a prediction: implausible organ volumes and
members that disagree. They go on the overlay pictures, into ``--report`` files and onto the console."""

from __future__ import annotations

from collections.abc import Mapping

from organseg.labels import canonical_name
from organseg.organs import TYPICAL_VOLUME_ML

#: 1 − mean pairwise Dice of the members' masks above which the members are said to disagree.
DISAGREEMENT_THRESHOLD = 0.2


def typical_range_ml(name: str) -> tuple[float, float] | None:
    """The typical adult volume range of a label, when known: by its name, or by the structure its
    name stands for in any dataset's spelling (``Kidney_R`` is the right kidney). None for every
    other label (a pancreas, a vessel, a lesion): no range is known, so no flag is raised."""
    if name in TYPICAL_VOLUME_ML:
        return TYPICAL_VOLUME_ML[name]
    canonical = canonical_name(name)
    return TYPICAL_VOLUME_ML.get(canonical) if canonical else None


def volume_flags(volumes_ml: Mapping[str, float]) -> list[str]:
    """One line per label whose volume lies outside its :data:`organseg.organs.TYPICAL_VOLUME_ML`
    range (labels without a known range are skipped)."""
    flags = []
    for organ, volume in volumes_ml.items():
        known = typical_range_ml(organ)
        if known is None:
            continue
        lo, hi = known
        name = organ.replace("_", " ")
        if volume <= 0:
            flags.append(f"{name}: nothing segmented")
        elif not lo <= volume <= hi:
            flags.append(
                f"{name} {volume:,.0f} mL: outside the typical adult range {lo:,.0f}-{hi:,.0f} mL"
            )
    return flags


def disagreement_flags(uncertainty: Mapping[str, float]) -> list[str]:
    """One line per organ whose members disagree more than :data:`DISAGREEMENT_THRESHOLD`."""
    return [
        f"{organ.replace('_', ' ')}: members disagree (1 - mean pairwise Dice {value:.2f})"
        for organ, value in uncertainty.items()
        if value > DISAGREEMENT_THRESHOLD
    ]


def prediction_flags(
    volumes_ml: Mapping[str, float], uncertainty: Mapping[str, float] | None = None
) -> list[str]:
    """Every flag of a prediction, volumes first."""
    return volume_flags(volumes_ml) + disagreement_flags(uncertainty or {})
