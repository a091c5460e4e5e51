"""Telling CT, T1 in-phase, T1 out-of-phase and T2-SPIR apart from DICOM header facts.

Headers are the first evidence: the scanner wrote down what it acquired. Text tags (SeriesDescription,
ProtocolName, SequenceName) name the sequence; echo and repetition times count only as physics, never as
a guess (in/out of phase needs the field strength the echo time is measured against, T2 needs both a
long echo and a long repetition time). What the headers leave open is UNKNOWN, with the modalities they
still allow, and the caller asks the model directory's modality classifier
(:mod:`organseg.ensemble.modality_classifier`) or the sender. Every decision records *why*.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from organseg.io.volume import Modality

# Fat-water chemical shift (~3.4-3.5 ppm) times the proton gyromagnetic ratio: fat and water precess in
# phase every 1/(shift * 42.577 MHz/T * B0) seconds (4.5 ms at 1.5 T, 2.3 ms at 3 T).
_FAT_WATER_SHIFT_PPM = 3.45
_GYROMAGNETIC_MHZ_PER_T = 42.577
#: Beyond a few fat-water cycles the phase of an echo is too sensitive to the exact shift to trust.
_PHASE_MAX_ECHO_MS = 10.0
#: T2 weighting needs a long echo (T2 contrast) *and* a long repetition (T1 recovery, no T1 weighting).
_T2_MIN_ECHO_MS = 60.0
_T2_MIN_REPETITION_MS = 1000.0
MR_SEQUENCES = frozenset({Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR})
_T1_PHASES = frozenset({Modality.MR_T1_IN, Modality.MR_T1_OUT})

# Separators include "_" (``T1_in_phase``), so plain \b word boundaries will not do.
_SEP_BEFORE, _SEP_AFTER = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_IN_PHASE = re.compile(_SEP_BEFORE + r"(in[ _-]?phase|ip|in)" + _SEP_AFTER, re.IGNORECASE)
_OUT_PHASE = re.compile(
    _SEP_BEFORE + r"(out[ _-]?(of[ _-]?)?phase|opp(osed)?[ _-]?phase|op|out)" + _SEP_AFTER,
    re.IGNORECASE,
)
_T2 = re.compile(r"t2|spir|spair|haste|ssfse|stir", re.IGNORECASE)
#: The header's free-text tags that name the sequence. Their values are never quoted in a reason:
#: sites fill descriptions with patient names and accession numbers, and reasons reach answers and logs.
_TEXT_TAGS = ("SeriesDescription", "ProtocolName", "SequenceName")
_SEQUENCE_NAMES = {
    Modality.MR_T1_IN: "T1 in-phase",
    Modality.MR_T1_OUT: "T1 out-of-phase",
    Modality.MR_T2SPIR: "T2-SPIR",
}
_CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")  # a DICOM CS value, e.g. the Modality tag


@dataclass
class ModalityDecision:
    """The modality a header implies, why, and any disagreement between the tags."""

    modality: Modality
    reason: str
    conflicts: list[str] = field(default_factory=list)
    #: What decided: "header", "request", "file" (the volume file's own record) or "classifier".
    source: str = "header"
    #: The classifier's calibrated confidence when it decided (None for every other source).
    confidence: float | None = None
    #: For an UNKNOWN header decision: the modalities the header still allows (empty: none at all).
    allowed: frozenset[Modality] = frozenset()

    @property
    def certain(self) -> bool:
        return self.modality is not Modality.UNKNOWN and not self.conflicts


def _float(value: str | None) -> float | None:
    try:
        return float(str(value).split("\\")[0]) if value not in (None, "") else None
    except ValueError:
        return None


def phase_from_echo_time(echo_ms: float, field_t: float) -> Modality | None:
    """In- or out-of-phase from the echo time at field strength ``field_t`` (tesla), or None when it
    sits between the two or beyond the first few fat-water cycles."""
    if not 0 < echo_ms <= _PHASE_MAX_ECHO_MS or not field_t > 0:
        return None
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
    case carries a stale ``ProtocolName`` of ``T2SPIR``). An MR series whose tags do not establish the
    sequence is UNKNOWN with ``allowed`` set to the sequences the tags leave open.
    """
    kind = (tags.get("Modality") or "").strip().upper()
    if kind == "CT":
        return ModalityDecision(Modality.CT, "DICOM Modality=CT")
    if kind != "MR":
        shown = kind if _CODE_STRING.match(kind) else "missing" if not kind else "not a code string"
        return ModalityDecision(Modality.UNKNOWN, f"DICOM Modality is {shown}, not CT or MR")

    text = " ".join(str(tags.get(k) or "") for k in _TEXT_TAGS).strip()
    echo = _float(tags.get("EchoTime"))
    repetition = _float(tags.get("RepetitionTime"))
    field_t = _float(tags.get("MagneticFieldStrength"))

    by_text = _sequence_of(text)

    by_echo, echo_reason, allowed = _from_echo(echo, repetition, field_t)
    text_reason = _text_reason(tags, by_text) if text else ""
    if by_text and by_echo and by_text is not by_echo:
        return ModalityDecision(
            Modality.UNKNOWN,
            "DICOM Modality=MR but the series tags disagree",
            [text_reason, f"{echo_reason} says {by_echo.value}"],
        )
    if by_text and by_text not in allowed:
        return ModalityDecision(
            Modality.UNKNOWN,
            "DICOM Modality=MR but the series tags disagree",
            [text_reason, f"{echo_reason} does not allow it"],
        )
    chosen = by_text or by_echo
    if chosen is None:
        why = ", ".join(r for r in (text_reason, echo_reason) if r) or "no series description"
        return ModalityDecision(
            Modality.UNKNOWN,
            f"DICOM Modality=MR, sequence not established ({why})",
            allowed=allowed,
        )
    reasons = [r for r, m in ((text_reason, by_text), (echo_reason, by_echo)) if m is not None]
    return ModalityDecision(chosen, "DICOM Modality=MR, " + " and ".join(reasons))


#: The header keywords :func:`infer_modality` reads (what a header-only read must ask pydicom for).
MODALITY_KEYWORDS = ("Modality", "SeriesDescription", "ProtocolName", "SequenceName", "EchoTime",
                     "RepetitionTime", "MagneticFieldStrength")  # fmt: skip


def header_sequence(ds: Any) -> str:
    """The MR sequence one instance's header establishes, as its value (``"MR-T1-in"``), or ``""``
    when it does not (or for CT): what the DICOM node and batch discovery gather a stacking model's
    series by. ``ds`` is anything with ``get(keyword, default)``, such as a pydicom Dataset."""
    tags = {k: str(ds.get(k, "") or "") for k in MODALITY_KEYWORDS}
    decision = infer_modality(tags)
    return decision.modality.value if decision.certain and tags["Modality"] == "MR" else ""


def _sequence_of(text: str) -> Modality | None:
    if _OUT_PHASE.search(text):
        return Modality.MR_T1_OUT
    if _IN_PHASE.search(text):
        return Modality.MR_T1_IN
    if _T2.search(text):
        return Modality.MR_T2SPIR
    return None


def _text_reason(tags: Mapping[str, str], by_text: Modality | None) -> str:
    """The text tags' evidence in words: which tags named which sequence, never what they say."""
    present = [k for k in _TEXT_TAGS if str(tags.get(k) or "").strip()]
    if by_text is None:
        return f"{'/'.join(present)} names no known sequence"
    naming = [k for k in present if _sequence_of(str(tags.get(k))) is by_text] or present
    return f"{'/'.join(naming)} names {_SEQUENCE_NAMES[by_text]}"


def _from_echo(
    echo: float | None, repetition: float | None, field_t: float | None
) -> tuple[Modality | None, str, frozenset[Modality]]:
    """What echo/repetition times and field strength establish: ``(sequence or None, the evidence in
    words, the sequences they still allow)``."""
    if echo is None:
        return None, "no EchoTime", MR_SEQUENCES
    te = f"EchoTime={echo:g} ms"
    tr = f"RepetitionTime={repetition:g} ms" if repetition is not None else "no RepetitionTime"
    if echo >= _T2_MIN_ECHO_MS:
        if repetition is not None and repetition >= _T2_MIN_REPETITION_MS:
            return Modality.MR_T2SPIR, f"{te} and {tr}", MR_SEQUENCES
        # a long echo rules out a dual (in/out-of-phase) gradient echo, but without a long
        # repetition time the T2 weighting is not established
        return None, f"{te} with {tr}", frozenset({Modality.MR_T2SPIR})
    if echo > _PHASE_MAX_ECHO_MS:
        return None, te, MR_SEQUENCES
    if field_t is None or not field_t > 0:
        # a short gradient echo: in or out of phase depends on the field, which the header omits
        return None, f"{te} without MagneticFieldStrength", _T1_PHASES
    phase = phase_from_echo_time(echo, field_t)
    reason = f"{te} at {field_t:g} T"
    if phase is None:
        return None, reason + " (between in and out of phase)", _T1_PHASES
    return phase, reason, _T1_PHASES
