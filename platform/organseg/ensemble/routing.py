"""Which modality's ensemble a volume goes to, and why: the router's rule, shared by every entry point.

It replaces SUMNet's learned modality classifier: DICOM headers say what was acquired. An explicit
request wins only if the headers do not contradict it, and nothing is ever guessed.
"""

from __future__ import annotations

from organseg.errors import DataError
from organseg.io.modality import ModalityDecision, infer_modality
from organseg.io.volume import Modality, Volume

_CHOICES = "CT, MR-T1-in, MR-T1-out or MR-T2SPIR"


class ModalityError(DataError):
    """The modality is unknown or contradictory; the message says what to send.

    ``str()`` speaks the service's language (the ``modality`` request field); :meth:`cli_message`
    says the same for the command line (``--modality``).
    """

    def __init__(self, problem: str, ask: bool = True) -> None:
        self.problem, self.ask = problem, ask
        super().__init__(f"{problem}; send the modality field as {_CHOICES}" if ask else problem)

    def cli_message(self) -> str:
        """The refusal worded for the command line (the request field named ``--modality``), with the
        choices when the user must say which."""
        problem = self.problem.replace("requested modality", "--modality")
        return f"{problem}; pass --modality {_CHOICES}" if self.ask else problem


def decide_modality(image: Volume, requested: Modality | str | None = None) -> ModalityDecision:
    """The modality for ``image``: headers first, then an explicit request or the file's own record."""
    header = infer_modality(image.meta) if image.meta.get("Modality") else None
    if requested not in (None, ""):
        wanted = Modality.parse(requested)
        if wanted is Modality.UNKNOWN:
            raise ModalityError("requested modality 'unknown' cannot be segmented")
        if header is not None and header.certain and header.modality is not wanted:
            raise ModalityError(
                f"requested modality {wanted.value} contradicts the DICOM header ({header.reason}: "
                f"{header.modality.value})",
                ask=False,
            )
        return ModalityDecision(
            wanted,
            "requested explicitly"
            + (f"; header agrees ({header.reason})" if header and header.certain else ""),
        )
    if header is not None:
        if header.conflicts:
            raise ModalityError(f"{header.reason}: {'; '.join(header.conflicts)}")
        if header.certain:
            return header
    if image.modality is not Modality.UNKNOWN:
        reason = (
            "CHAOS folder layout"
            if image.meta.get("case_id")
            else "modality recorded in the volume file"
        )
        return ModalityDecision(image.modality, reason)
    why = (
        header.reason
        if header is not None
        else "no DICOM header and no modality recorded in the file"
    )
    raise ModalityError(f"cannot tell the modality ({why})")
