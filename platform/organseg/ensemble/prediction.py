"""What an ensemble answers: the label map plus its report (no torch here).

Predictions cross process boundaries in the Serve graph (the ensemble replica returns one to the
router); keeping the class free of the predictor's imports lets the router unpickle it without
loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from organseg.io.volume import Modality, Volume
from organseg.labels import LabelSet


@dataclass
class Prediction:
    """A label map on the input's grid plus what a report needs to explain it."""

    labels: Volume
    modality: Modality
    modality_reason: str
    organs: list[str]
    members: list[str]
    volumes_ml: dict[str, float]
    uncertainty: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    #: The model directory's version (organseg.ensemble.version) that produced these labels.
    model_version: str = ""
    #: What decided the modality: "header", "request", "file" or "classifier".
    modality_source: str = ""
    #: The modality classifier's calibrated confidence when it decided (else None).
    modality_confidence: float | None = None
    #: T2-SPIR → T1 registration figures when T2 was stacked as a channel (rotation_deg,
    #: translation_mm, mutual_information, initial_mutual_information, iterations).
    registration: dict[str, float] | None = None
    #: The model's own label set (values, colours, codes of ``labels``); None: the CHAOS organs.
    label_set: LabelSet | None = None

    def report(self) -> dict[str, Any]:
        """JSON-ready metadata (``--report`` files and the Serve response carry exactly this)."""
        report = {
            "modality": self.modality.value,
            "modality_reason": self.modality_reason,
            "modality_source": self.modality_source,
            "modality_confidence": None
            if self.modality_confidence is None
            else round(self.modality_confidence, 4),
            "organs": self.organs,
            "members": self.members,
            "volumes_ml": {k: round(v, 3) for k, v in self.volumes_ml.items()},
            "uncertainty": {k: round(v, 4) for k, v in self.uncertainty.items()},
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "shape": list(self.labels.shape),
            "spacing": list(self.labels.spacing),
            "model_version": self.model_version,
        }
        if self.registration is not None:
            report["registration"] = dict(self.registration)
        return report
