"""The modality gate's command-line options, shared by `predict --local` and `dicom listen --local`.

In-process prediction gates the modality classifier itself; a served endpoint gates with its serve
config (``modality_min_*``), so giving these options with one is a usage error, not silently ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from organseg.errors import OrgansegError

if TYPE_CHECKING:
    from organseg.ensemble.routing import ModalityPolicy


def min_confidence_option(below: str) -> Any:
    """``--modality-min-confidence``; ``below`` says what happens under it for this command."""
    return typer.Option(
        None,
        "--modality-min-confidence",
        min=0.0,
        max=1.0,
        help="With --local: least classifier confidence to route a volume whose headers do not "
        f"say its modality (below: {below}); default 0.9, as the serve config's "
        "modality_min_confidence.",
    )


def min_accuracy_option() -> Any:
    return typer.Option(
        None,
        "--modality-min-held-out-accuracy",
        min=0.0,
        max=1.0,
        help="With --local: least out-of-fold held-out accuracy for the modality classifier to be "
        "used at all; default 0.95 (serve: modality_min_held_out_accuracy).",
    )


def min_accuracy_per_modality_option() -> Any:
    return typer.Option(
        None,
        "--modality-min-held-out-accuracy-per-modality",
        min=0.0,
        max=1.0,
        help="With --local: least out-of-fold held-out accuracy on each modality's series for the "
        "modality classifier to be used at all; default 0.9 (serve: "
        "modality_min_held_out_accuracy_per_modality).",
    )


def min_series_option() -> Any:
    return typer.Option(
        None,
        "--modality-min-held-out-series",
        min=1,
        help="With --local: least out-of-fold held-out series per modality for the modality "
        "classifier to be used at all; default 4 (serve: modality_min_held_out_series).",
    )


def gate_policy(
    min_confidence: float | None,
    min_accuracy: float | None,
    min_series: int | None,
    in_process: bool,
    min_accuracy_per_modality: float | None = None,
) -> ModalityPolicy | None:
    """The policy the options set (None: none given, the defaults apply); a usage error when they
    are given for a served endpoint (``in_process`` False)."""
    gate = {
        "min_confidence": min_confidence,
        "min_held_out_accuracy": min_accuracy,
        "min_held_out_series": min_series,
        "min_held_out_accuracy_per_modality": min_accuracy_per_modality,
    }
    gate = {k: v for k, v in gate.items() if v is not None}
    if not gate:
        return None
    if not in_process:
        raise OrgansegError(
            "--modality-min-* apply to --local; a served endpoint uses its serve config's "
            "modality_min_* fields"
        )
    from organseg.ensemble.routing import ModalityPolicy

    return ModalityPolicy(**gate)
