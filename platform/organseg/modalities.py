"""The imaging modalities organseg knows, as one torch- and SimpleITK-free vocabulary.

Configs, the model directory, the wire formats and :class:`organseg.io.volume.Volume` all name
modalities with these values; keeping the enum here lets ``organseg.config`` and the Serve router use it
without importing the image stack.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

from organseg.errors import ConfigError


class Modality(str, Enum):
    """Imaging modality/sequence; the value is the string used in configs, files and APIs."""

    CT = "CT"
    MR_T1_IN = "MR-T1-in"
    MR_T1_OUT = "MR-T1-out"
    MR_T2SPIR = "MR-T2SPIR"
    #: MR of a sequence the dataset does not name: a model trained on such channels is a generic MR
    #: ensemble, which segments an MR series that no sequence-specific ensemble of the model claims.
    MR = "MR"
    UNKNOWN = "unknown"

    @property
    def is_mr(self) -> bool:
        return self in (Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR, Modality.MR)

    @property
    def is_mr_sequence(self) -> bool:
        """An MR modality that names its sequence (every MR kind but the generic ``MR``)."""
        return self.is_mr and self is not Modality.MR

    @classmethod
    def known(cls) -> tuple[Modality, ...]:
        """Every modality a model can be trained on or asked for (all but ``unknown``)."""
        return tuple(m for m in cls if m is not cls.UNKNOWN)

    @classmethod
    def lookup(cls, value: str | Modality) -> Modality | None:
        """The modality a canonical value or common alias names (``ct``, ``t2spir``, ``inphase``...), or None."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower().replace("_", "-").replace(" ", "")
        for member in cls:
            if key == member.value.lower():
                return member
        return _ALIASES.get(key)

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Like :meth:`lookup`, but an unrecognised name is a ConfigError listing the valid ones."""
        found = cls.lookup(value)
        if found is None:
            raise ConfigError(unknown_modality_message(value, cls))
        return found


_ALIASES: dict[str, Modality] = {
    "t1in": Modality.MR_T1_IN, "t1-in": Modality.MR_T1_IN, "inphase": Modality.MR_T1_IN,
    "t1dual-in": Modality.MR_T1_IN, "mr-t1in": Modality.MR_T1_IN,
    "t1out": Modality.MR_T1_OUT, "t1-out": Modality.MR_T1_OUT, "outphase": Modality.MR_T1_OUT,
    "t1dual-out": Modality.MR_T1_OUT, "mr-t1out": Modality.MR_T1_OUT,
    "t2": Modality.MR_T2SPIR, "t2spir": Modality.MR_T2SPIR, "mr-t2": Modality.MR_T2SPIR,
}  # fmt: skip


def unknown_modality_message(value: Any, valid: Any = None) -> str:
    """``unknown modality 'T3'; expected one of [...]`` (``valid`` defaults to the known modalities)."""
    names = [m.value for m in (Modality.known() if valid is None else valid)]
    return f"unknown modality {value!r}; expected one of {names}"


def _parse_known(value: Any) -> Modality:
    """Pydantic before-validator: a ValueError (which pydantic reports with the key) for anything
    but a known modality, so a config or model directory can never name ``unknown``."""
    found = Modality.lookup(value) if isinstance(value, str | Modality) else None
    if found is None or found is Modality.UNKNOWN:
        raise ValueError(unknown_modality_message(value))
    return found


#: A modality field of a config or model description: a known modality, written as its value or an alias.
KnownModality = Annotated[
    Modality,
    BeforeValidator(_parse_known),
    WithJsonSchema({"type": "string", "enum": [m.value for m in Modality.known()]}),
]


def _parse_exact(value: Any) -> str:
    """Pydantic before-validator: a known modality written exactly as its value (case aside), no
    alias: in a map that *states* a dataset's modalities, ``T2`` is not known to mean T2-SPIR."""
    if isinstance(value, str | Modality):
        key = (value.value if isinstance(value, Modality) else value).strip().lower()
        for member in Modality.known():
            if member.value.lower() == key:
                return member.value
    raise ValueError(unknown_modality_message(value))


#: A modality stated in a dataset map: exactly one of the known values (no aliases), kept as its value.
ExactModality = Annotated[
    str,
    BeforeValidator(_parse_exact),
    WithJsonSchema({"type": "string", "enum": [m.value for m in Modality.known()]}),
]
