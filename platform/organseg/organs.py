"""The CHAOS organ vocabulary: label ids, mask grey levels and display colours, in one place."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from organseg.labels import LabelSet

#: Label ids used everywhere inside organseg (label maps, model channels are ``id - 1``).
ORGAN_LABELS: MappingProxyType[str, int] = MappingProxyType(
    {"liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
)
LABEL_NAMES: MappingProxyType[int, str] = MappingProxyType({v: k for k, v in ORGAN_LABELS.items()})
ORGAN_NAMES: tuple[str, ...] = tuple(ORGAN_LABELS)

#: Inclusive grey-level ranges of the CHAOS MR ground-truth PNGs (challenge documentation).
MR_GREY_RANGES: MappingProxyType[str, tuple[int, int]] = MappingProxyType(
    {"liver": (55, 70), "right_kidney": (110, 135), "left_kidney": (175, 200), "spleen": (240, 255)}
)

#: Grey levels organseg writes into CHAOS submission PNGs (the challenge's nominal values).
SUBMISSION_GREY: MappingProxyType[str, int] = MappingProxyType(
    {"liver": 63, "right_kidney": 126, "left_kidney": 189, "spleen": 252}
)
#: CT ground truth is binary liver; organseg writes 255 for CT masks like the CHAOS ``Ground`` folders.
CT_LIVER_GREY = 255

#: Display colours (RGB) for overlays and DICOM-SEG: one bright, mutually distinct hue per organ that
#: stays visible on dark MR and grey CT (pure blue and red vanish on dark images).
ORGAN_COLOURS: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "liver": (255, 255, 0),
        "right_kidney": (255, 0, 255),
        "left_kidney": (0, 255, 255),
        "spleen": (255, 140, 0),
    }
)
#: Adult organ volumes (mL) outside which a prediction is flagged for a second look; wide on
#: purpose (livers of 1.0-2.5 L and kidneys of 100-250 mL are usual; CHAOS livers span ~1-3 L).
TYPICAL_VOLUME_ML: MappingProxyType[str, tuple[float, float]] = MappingProxyType(
    {
        "liver": (600.0, 3500.0),
        "right_kidney": (50.0, 400.0),
        "left_kidney": (50.0, 400.0),
        "spleen": (40.0, 1000.0),
    }
)


def organ_ids(names: list[str] | tuple[str, ...]) -> list[int]:
    """Label ids for organ names, rejecting unknown names with the valid list."""
    unknown = [n for n in names if n not in ORGAN_LABELS]
    if unknown:
        from organseg.errors import ConfigError

        raise ConfigError(f"unknown organ(s) {unknown}; valid organs are {list(ORGAN_NAMES)}")
    return [ORGAN_LABELS[n] for n in names]


def chaos_labels() -> LabelSet:
    """The vocabulary above as the CHAOS preset :class:`organseg.labels.LabelSet` (built on demand,
    so this module stays free of imports)."""
    from organseg.labels import chaos_label_set

    return chaos_label_set()
