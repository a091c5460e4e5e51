"""The one set of preprocessing choices a model is trained with, and must be served with.

A member's checkpoint stores this config, so training, ``organseg predict --local`` and the Serve graph
rebuild exactly the same pixels from a raw volume.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


class PreprocessConfig(BaseModel):
    """Intensity, in-plane size and channel layout of the slices a model sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Square in-plane target in pixels; slices are resampled to size×size over the same field of view.
    size: int = 256
    #: CT window in HU, mapped linearly to [0, 1] (the CHAOS winners' abdominal window).
    ct_window: tuple[float, float] = (-160.0, 240.0)
    #: MR normalization after percentile clipping: z-score (mean 0, std 1) or min-max to [0, 1].
    mr_norm: Literal["zscore", "minmax"] = "zscore"
    #: Percentiles clipped before MR normalization, so a few bright vessels or artefacts don't set the scale.
    mr_percentiles: tuple[float, float] = (0.5, 99.5)
    #: ``stack``: a patient's T1 in- and out-phase become one 2-channel sample; ``separate``: two samples.
    t1_mode: Literal["stack", "separate"] = "stack"
    #: dtype of the slice cache on disk (float16 halves disk and page-cache use; [0, 1] and z-scores fit).
    cache_dtype: Literal["float16", "float32"] = "float16"

    @field_validator("size")
    @classmethod
    def _size_fits_encoders(cls, value: int) -> int:
        if value < 32 or value % 32:
            raise ValueError(
                f"size must be at least 32 and divisible by 32 (encoders downsample 5 times), got {value}"
            )
        return value

    @field_validator("ct_window")
    @classmethod
    def _window_in_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not lo < hi:
            raise ValueError(f"ct_window needs lo < hi (HU), got ({lo}, {hi})")
        return value

    @field_validator("mr_percentiles")
    @classmethod
    def _percentiles_in_order(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"mr_percentiles needs 0 <= lo < hi <= 100, got ({lo}, {hi})")
        return value

    def fingerprint(self) -> str:
        """Short stable hash of every field: caches and checkpoints compare it to detect drift."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]
