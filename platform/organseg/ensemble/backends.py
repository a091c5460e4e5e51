"""The in-process prediction backend behind ``organseg predict --local`` (remote ones live in serve.client)."""

from __future__ import annotations

from pathlib import Path

from organseg.ensemble.inputs import PredictInput, resolve_inputs
from organseg.ensemble.predictor import EnsemblePredictor, Prediction


class LocalBackend:
    def __init__(self, model_dir: Path, device: str | None = None) -> None:
        self.predictor = EnsemblePredictor(model_dir, device=device)

    def describe(self) -> str:
        return f"in-process, {self.predictor.spec.name}"

    def inputs(self, path: Path, modality: str | None) -> list[PredictInput]:
        return resolve_inputs(
            path, modality, stack_t1=self.predictor.spec.preprocess.t1_mode == "stack"
        )

    def predict(self, item: PredictInput, modality: str | None) -> Prediction:
        return self.predictor.predict(item.image, modality, item.partner)
