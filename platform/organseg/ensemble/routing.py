"""Which modality's ensemble a volume goes to, and why: the one rule shared by local prediction and the
Serve router.

Evidence is used in this order, and the decision names the one that decided:

1. the DICOM header (``header``): Modality=CT, or an MR sequence its tags establish
   (:func:`organseg.io.modality.infer_modality`);
2. the request's ``modality`` field / ``--modality`` (``request``), which the header must not contradict;
3. the volume file's own record, e.g. the CHAOS folder layout (``file``);
4. the model directory's modality classifier (``classifier``), for headerless volumes and for MR series
   whose headers do not establish the sequence; only when it was validated on enough held-out series,
   only above a confidence, and only when it agrees with what the header still allows.

Anything else is a :class:`ModalityError` (HTTP 422) saying what is missing; nothing is guessed.

A model with a generic ``MR`` ensemble (trained on MR of no named sequence) is told so by ``served``
(the modalities its ensembles serve): an MR series goes to the ensemble of its sequence when the model
has one, and to the generic MR ensemble when no sequence-specific ensemble of the model can claim it.
When one could and the sequence is not established, the sequence decides, so it is refused naming it
(or decided by the validated classifier) — never routed to the generic ensemble by default.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from organseg.errors import DataError
from organseg.io.modality import ModalityDecision, infer_modality
from organseg.io.volume import Modality, Volume

if TYPE_CHECKING:
    from organseg.ensemble.modality_classifier import ModalityClassifier

_CHOICES = "CT, MR-T1-in, MR-T1-out or MR-T2SPIR"
#: The choices a model with a generic MR ensemble offers.
_CHOICES_WITH_MR = "CT, MR-T1-in, MR-T1-out, MR-T2SPIR or MR"


class ModalityError(DataError):
    """The modality is unknown or contradictory; the message says what to send.

    ``str()`` speaks the service's language (the ``modality`` request field); :meth:`cli_message`
    says the same for the command line (``--modality``).
    """

    def __init__(self, problem: str, ask: bool = True, choices: str = _CHOICES) -> None:
        self.problem, self.ask, self.choices = problem, ask, choices
        super().__init__(f"{problem}; send the modality field as {choices}" if ask else problem)

    def cli_message(self) -> str:
        """The refusal worded for the command line (the request field named ``--modality``), with the
        choices when the user must say which."""
        problem = self.problem.replace("requested modality", "--modality")
        return f"{problem}; pass --modality {self.choices}" if self.ask else problem


class ModalityPolicy(BaseModel):
    """When the modality classifier may decide (the validation gate) and how sure it must be."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Least calibrated confidence at which the modality classifier may route a volume "
        "whose headers do not say its modality; below it the answer is a 422 asking for modality.",
    )
    min_held_out_accuracy: float = Field(
        0.95,
        ge=0,
        le=1,
        description="Least accuracy the modality classifier must have reached on its out-of-fold "
        "held-out series (patient-grouped cross-validation: each series predicted by a classifier "
        "fitted without its patient) for it to be used at all.",
    )
    min_held_out_accuracy_per_modality: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Least out-of-fold held-out accuracy the modality classifier must have reached on "
        "each modality's series for it to be used at all: the overall accuracy can hide one modality "
        "it gets wrong.",
    )
    min_held_out_series: int = Field(
        4,
        ge=1,
        description="Least out-of-fold held-out series of each modality the classifier's accuracy must "
        "have been measured on for it to be used at all (cross-validation holds out every series "
        "once: CHAOS gives 20 per modality).",
    )


def classifier_status(
    classifier: ModalityClassifier | None, policy: ModalityPolicy
) -> dict[str, Any] | None:
    """Whether ``classifier`` may route headerless volumes under ``policy``, and its validation (what
    ``GET /v1/models`` and ``organseg models show`` report); None without a classifier."""
    if classifier is None:
        return None
    held = classifier.held_out
    problem = classifier.validation_problem(
        policy.min_held_out_accuracy,
        policy.min_held_out_series,
        policy.min_held_out_accuracy_per_modality,
    )
    return {
        "used": problem is None,
        "why_not": problem,
        "held_out_accuracy": held.accuracy if held else None,
        "held_out_series": {c: n for c, (_, n) in held.per_class.items()} if held else {},
        "held_out_accuracy_per_class": held.accuracy_per_class if held else {},
        "validation": held.method if held else None,
        "folds": held.folds if held else None,
        "patients": held.patients if held else None,
        "min_confidence": policy.min_confidence,
    }


def decide_modality(
    image: Volume,
    requested: Modality | str | None = None,
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
    served: Collection[Modality] | None = None,
) -> ModalityDecision:
    """The modality for ``image`` and the evidence that decided it (see the module docstring).

    ``served``: the modalities the model's ensembles serve (and the sequences it stacks); only a
    model with a generic ``MR`` ensemble routes differently, so None keeps the rule as it was."""
    if served is None or Modality.MR not in served:
        return _decide(image, requested, classifier, policy)
    try:
        return _for_generic_mr(image, requested, classifier, policy, frozenset(served))
    except ModalityError as exc:
        raise ModalityError(exc.problem, exc.ask, _CHOICES_WITH_MR) from None


def _decide(
    image: Volume,
    requested: Modality | str | None,
    classifier: ModalityClassifier | None,
    policy: ModalityPolicy | None,
) -> ModalityDecision:
    """The rule for every model without a generic MR ensemble."""
    header = infer_modality(image.meta) if image.meta.get("Modality") else None
    if requested not in (None, ""):
        return _requested(Modality.parse(requested), header)
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
        return ModalityDecision(image.modality, reason, source="file")
    why = (
        header.reason
        if header is not None
        else "no DICOM header and no modality recorded in the file"
    )
    if header is not None and not header.allowed:
        raise ModalityError(f"cannot tell the modality ({why})")  # e.g. a PET series: not ours
    return _classified(image, header, why, classifier, policy or ModalityPolicy())


def _for_generic_mr(
    image: Volume,
    requested: Modality | str | None,
    classifier: ModalityClassifier | None,
    policy: ModalityPolicy | None,
    served: frozenset[Modality],
) -> ModalityDecision:
    """The rule for a model with a generic MR ensemble (see the module docstring)."""
    header = infer_modality(image.meta) if image.meta.get("Modality") else None
    sequences = frozenset(m for m in served if m.is_mr_sequence)
    if requested not in (None, "") and Modality.parse(requested) is Modality.MR:
        if header is not None and header.certain and not header.modality.is_mr:
            raise ModalityError(
                f"requested modality MR contradicts the DICOM header ({header.reason}: "
                f"{header.modality.value})",
                ask=False,
            )
        if header is not None and header.certain:  # the header names the sequence: it decides
            return _to_ensemble(header, served)
        return ModalityDecision(Modality.MR, "requested explicitly", source="request")
    undecided_mr = (
        header is not None
        and not header.conflicts
        and not header.certain
        and bool(header.allowed)
        and header.allowed <= _MR_SEQUENCES
    )
    if requested in (None, "") and undecided_mr:
        assert header is not None
        claimants = header.allowed & sequences
        if not claimants:
            return ModalityDecision(
                Modality.MR,
                f"{header.reason}; no sequence-specific ensemble here can claim it, so the "
                "generic MR ensemble segments it",
            )
        if classifier is None:
            names = ", ".join(sorted(m.value for m in claimants))
            raise ModalityError(
                f"cannot tell the MR sequence ({header.reason}); this model has "
                f"sequence-specific ensembles ({names}) besides its generic MR one, so the "
                "sequence decides which segments the series"
            )
    return _to_ensemble(_decide(image, requested, classifier, policy), served)


_MR_SEQUENCES = frozenset(m for m in Modality if m.is_mr_sequence)


def _to_ensemble(decision: ModalityDecision, served: frozenset[Modality]) -> ModalityDecision:
    """An MR sequence no ensemble of the model serves goes to its generic MR ensemble, saying so."""
    if not decision.modality.is_mr_sequence or decision.modality in served:
        return decision
    return ModalityDecision(
        Modality.MR,
        f"{decision.reason}; no {decision.modality.value} ensemble here, so the generic MR "
        "ensemble segments it",
        decision.conflicts,
        decision.source,
        decision.confidence,
    )


def _requested(wanted: Modality, header: ModalityDecision | None) -> ModalityDecision:
    if wanted is Modality.UNKNOWN:
        raise ModalityError("requested modality 'unknown' cannot be segmented")
    if header is not None and header.certain and header.modality is not wanted:
        raise ModalityError(
            f"requested modality {wanted.value} contradicts the DICOM header ({header.reason}: "
            f"{header.modality.value})",
            ask=False,
        )
    if header is not None and header.allowed and wanted not in header.allowed:
        allowed = ", ".join(sorted(m.value for m in header.allowed))
        raise ModalityError(
            f"requested modality {wanted.value} contradicts the DICOM header ({header.reason}: "
            f"one of {allowed})",
            ask=False,
        )
    return ModalityDecision(
        wanted,
        "requested explicitly"
        + (f"; header agrees ({header.reason})" if header and header.certain else ""),
        source="request",
    )


def _classified(
    image: Volume,
    header: ModalityDecision | None,
    why: str,
    classifier: ModalityClassifier | None,
    policy: ModalityPolicy,
) -> ModalityDecision:
    """The classifier's decision, or the refusal that says why it cannot decide."""
    if classifier is None:
        raise ModalityError(
            f"cannot tell the modality ({why}; the model has no modality classifier)"
        )
    problem = classifier.validation_problem(
        policy.min_held_out_accuracy,
        policy.min_held_out_series,
        policy.min_held_out_accuracy_per_modality,
    )
    if problem is not None:
        raise ModalityError(f"cannot tell the modality ({why}), and {problem}")
    guess = classifier.predict(image)
    if guess.modality is Modality.UNKNOWN:
        raise ModalityError(f"cannot tell the modality ({why}), and the {guess.evidence}")
    said = (
        f"the modality classifier says {guess.modality.value} at {guess.confidence:.2f} confidence"
    )
    if header is not None and guess.modality not in header.allowed:
        allowed = ", ".join(sorted(m.value for m in header.allowed))
        raise ModalityError(f"the DICOM header ({header.reason}) allows {allowed}, but {said}")
    if guess.confidence < policy.min_confidence:
        raise ModalityError(
            f"cannot tell the modality ({why}): {said}, below the {policy.min_confidence:.2f} "
            "required"
        )
    reason = f"{guess.evidence}: {guess.confidence:.2f} confidence"
    if header is not None:
        reason += f"; the header allows it ({header.reason})"
    return ModalityDecision(
        guess.modality, reason, source="classifier", confidence=guess.confidence
    )
