"""The in-process prediction backend (``--local``); :mod:`organseg.serve.connect` chooses between it and
the served ones of :mod:`organseg.serve.client`.

Every backend answers the same questions before any work (what it serves, what to record about the
model) so ``organseg predict`` can skip series it cannot take and write a complete report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from organseg.ensemble.inputs import InputPlan, PredictInput, channel_pairs, plan_inputs
from organseg.ensemble.prediction import Prediction
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.ensemble.routing import ModalityPolicy
from organseg.io.volume import Modality, Volume


class LocalBackend:
    """Prediction in this process from a model directory (``organseg predict --local``)."""

    def __init__(
        self, model_dir: Path, device: str | None = None, policy: ModalityPolicy | None = None
    ) -> None:
        self.model_dir = Path(model_dir)
        self.predictor = EnsemblePredictor(model_dir, device=device, policy=policy)

    def describe(self) -> str:
        """One line for reports: where predictions are computed."""
        return f"in-process, {self.predictor.spec.name}"

    def plan(self, path: Path, modality: str | None) -> list[InputPlan]:
        """What will be segmented under ``path`` (one entry per series or file), before anything is
        read.
        """
        return plan_inputs(
            path,
            modality,
            stack_t1=self.predictor.spec.preprocess.t1_mode == "stack",
            with_t2=self.predictor.spec.preprocess.t2_channel,
            channels=channel_pairs(self.predictor.spec.preprocess),
        )

    def modalities(self) -> list[Modality]:
        """Modalities some member accepts (a series of any other is skipped unread)."""
        return self.predictor.spec.modalities()

    def model_info(self) -> dict[str, Any]:
        """What a report records about the model: its directory, name, creation time and version."""
        spec = self.predictor.spec
        return {
            "model_dir": str(self.model_dir.resolve()),
            "name": spec.name,
            "created": spec.created,
            # content hash of ensemble.yaml and the weights (organseg.ensemble.version)
            "version": self.predictor.version,
            "organseg_version": spec.organseg_version,
        }

    def predict(self, item: PredictInput, modality: str | None) -> Prediction:
        """Segment one planned input with the ensemble of its modality."""
        return self.predictor.predict(
            item.image, modality, item.partner, item.t2, channels=item.channels
        )

    def segment(self, volume: Volume, modality: str | None) -> Prediction:
        """Segment one volume read elsewhere (the DICOM node's received series)."""
        return self.predictor.predict(volume, modality)
