"""Telling CT, T1 in-phase, T1 out-of-phase and T2-SPIR apart from DICOM header facts.

This replaces SUMNet's learned modality classifier: the scanner already wrote down what it acquired.
The decision records *why* (which tag said what) and refuses to guess when tags disagree or say nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from organseg.io.volume import Modality

# Fat-water chemical shift (~3.4-3.5 ppm) times the proton gyromagnetic ratio: fat and water precess in
# phase every 1/(shift * 42.577 MHz/T * B0) seconds (4.5 ms at 1.5 T, 2.3 ms at 3 T).
_FAT_WATER_SHIFT_PPM = 3.45
_GYROMAGNETIC_MHZ_PER_T = 42.577
_DEFAULT_FIELD_T = 1.5  # CHAOS MR was acquired on a 1.5 T Philips scanner
_T2_MIN_ECHO_MS = 30.0

# Separators include "_" (``T1_in_phase``), so plain \b word boundaries will not do.
_SEP_BEFORE, _SEP_AFTER = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_IN_PHASE = re.compile(_SEP_BEFORE + r"(in[ _-]?phase|ip|in)" + _SEP_AFTER, re.IGNORECASE)
_OUT_PHASE = re.compile(
    _SEP_BEFORE + r"(out[ _-]?(of[ _-]?)?phase|opp(osed)?[ _-]?phase|op|out)" + _SEP_AFTER,
    re.IGNORECASE,
)
_T2 = re.compile(r"t2|spir|spair|haste|ssfse|stir", re.IGNORECASE)


@dataclass
class ModalityDecision:
    """The modality a header implies, why, and any disagreement between the tags."""

    modality: Modality
    reason: str
    conflicts: list[str] = field(default_factory=list)

    @property
    def certain(self) -> bool:
        return self.modality is not Modality.UNKNOWN and not self.conflicts


def _float(value: str | None) -> float | None:
    try:
        return float(str(value).split("\\")[0]) if value not in (None, "") else None
    except ValueError:
        return None


def phase_from_echo_time(echo_ms: float, field_t: float = _DEFAULT_FIELD_T) -> Modality | None:
    """In- or out-of-phase from the echo time, or None when it sits between the two."""
    period_ms = 1000.0 / (_FAT_WATER_SHIFT_PPM * _GYROMAGNETIC_MHZ_PER_T * field_t)
    cycles = echo_ms / period_ms
    frac = cycles - math.floor(cycles)
    if min(frac, 1 - frac) < 0.2:
        return Modality.MR_T1_IN
    if abs(frac - 0.5) < 0.2:
        return Modality.MR_T1_OUT
    return None


def infer_modality(tags: Mapping[str, str]) -> ModalityDecision:
    """Decide the modality from header values keyed by DICOM keyword.

    Uses ``Modality``, ``SeriesDescription``, ``ProtocolName``, ``SequenceName``, ``EchoTime``,
    ``RepetitionTime`` and ``MagneticFieldStrength``. For CT only the Modality tag counts (the real CHAOS CT
    case carries a stale ``ProtocolName`` of ``T2SPIR``).
    """
    kind = (tags.get("Modality") or "").strip().upper()
    if kind == "CT":
        return ModalityDecision(Modality.CT, "DICOM Modality=CT")
    if kind != "MR":
        shown = kind or "missing"
        return ModalityDecision(Modality.UNKNOWN, f"DICOM Modality is {shown}, not CT or MR")

    text = " ".join(
        str(tags.get(k) or "") for k in ("SeriesDescription", "ProtocolName", "SequenceName")
    ).strip()
    echo = _float(tags.get("EchoTime"))
    field_t = _float(tags.get("MagneticFieldStrength")) or _DEFAULT_FIELD_T

    by_text: Modality | None = None
    if _OUT_PHASE.search(text):
        by_text = Modality.MR_T1_OUT
    elif _IN_PHASE.search(text):
        by_text = Modality.MR_T1_IN
    elif _T2.search(text):
        by_text = Modality.MR_T2SPIR

    by_echo: Modality | None = None
    if echo is not None:
        by_echo = (
            Modality.MR_T2SPIR if echo >= _T2_MIN_ECHO_MS else phase_from_echo_time(echo, field_t)
        )

    text_reason = f"series text {text!r}" if text else ""
    echo_reason = f"EchoTime={echo:g} ms at {field_t:g} T" if echo is not None else ""
    if by_text and by_echo and by_text is not by_echo:
        return ModalityDecision(
            Modality.UNKNOWN,
            "DICOM Modality=MR but the series tags disagree",
            [f"{text_reason} says {by_text.value}", f"{echo_reason} says {by_echo.value}"],
        )
    chosen = by_text or by_echo
    if chosen is None:
        why = (
            ", ".join(r for r in (text_reason, echo_reason) if r)
            or "no series description or echo time"
        )
        return ModalityDecision(
            Modality.UNKNOWN, f"DICOM Modality=MR, sequence not recognised ({why})"
        )
    reasons = [r for r, m in ((text_reason, by_text), (echo_reason, by_echo)) if m is not None]
    return ModalityDecision(chosen, "DICOM Modality=MR, " + " and ".join(reasons))
