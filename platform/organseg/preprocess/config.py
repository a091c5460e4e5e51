"""The preprocessing and augmentation choices of an experiment, as torch-free pydantic models.

A member's checkpoint stores :class:`PreprocessConfig`, so training, ``organseg predict --local`` and the
Serve graph rebuild exactly the same pixels from a raw volume. :class:`AugmentConfig` sits here too (its
implementation is :mod:`organseg.preprocess.augment`), so reading an experiment config never loads torch.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from organseg.errors import FieldErrors
from organseg.modalities import KnownModality


class InputChannel(BaseModel):
    """One input channel of a multi-channel model: the dataset's channel name and its modality
    (which decides its intensity normalization)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The channel's name in the dataset's dataset.json.")
    modality: KnownModality = Field(description="The channel's modality (CT, an MR kind).")


class PreprocessConfig(BaseModel):
    """Intensity, in-plane size and channel layout of the slices a model sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(
        256,
        description="Square in-plane target in pixels; slices are resampled to size×size over the "
        "same field of view.",
    )
    ct_window: tuple[float, float] = Field(
        (-160.0, 240.0),
        description="CT window in HU, mapped linearly to [0, 1] (the CHAOS winners' abdominal window).",
    )
    mr_norm: Literal["zscore", "minmax"] = Field(
        "zscore",
        description="MR normalization after percentile clipping: z-score (mean 0, std 1) or min-max "
        "to [0, 1].",
    )
    mr_percentiles: tuple[float, float] = Field(
        (0.5, 99.5),
        description="Percentiles clipped before MR normalization, so a few bright vessels or "
        "artefacts don't set the scale.",
    )
    t1_mode: Literal["stack", "separate"] = Field(
        "stack",
        description="``stack``: a patient's T1 in- and out-phase become one 2-channel sample; "
        "``separate``: two samples.",
    )
    t2_channel: bool = Field(
        False,
        description="With ``t1_mode: stack``: the patient's T2-SPIR series, rigidly registered to T1 "
        "in-phase (SimpleITK, mutual information) and resampled onto its grid, becomes a third channel "
        "(in, out, T2) of every T1 sample; training and prediction then need all three series.",
    )
    channels: tuple[InputChannel, ...] | None = Field(
        None,
        description="Set by training from an nnU-Net/MSD dataset whose channels are stacked "
        "(``dataset.channels: stack``): every channel of a case, in dataset.json order, is one "
        "input channel, normalized for its own modality; prediction and serving then need every "
        "channel of a case. Absent (null) for single-channel inputs and T1 stacking.",
    )
    cache_dtype: Literal["float16", "float32"] = Field(
        "float16",
        description="dtype of the slice cache on disk (float16 halves disk and page-cache use; "
        "[0, 1] and z-scores fit).",
    )

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

    @model_validator(mode="after")
    def _t2_channel_needs_stack(self) -> PreprocessConfig:
        if self.t2_channel and self.t1_mode != "stack":
            raise ValueError(
                "t2_channel adds T2 as the third channel of stacked T1 in+out; it needs t1_mode: stack"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_unset_channels(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # absent channels are not written, so configs, caches and checkpoints of models without
        # stacked dataset channels keep their exact dumps and fingerprints
        data = handler(self)
        if self.channels is None:
            data.pop("channels", None)
        return data

    def fingerprint(self) -> str:
        """Short stable hash of every field: caches and checkpoints compare it to detect drift."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


#: A probability in [0, 1].
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class AugmentConfig(BaseModel):
    """Probabilities and ranges of each augmentation; sizes in pixels are for a 256² slice and scale
    with the slice size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Augment training slices at all.")
    affine_p: Probability = Field(
        0.8,
        description="Probability of the random affine (scale, rotation, shear, shift together).",
    )
    scale: tuple[float, float] = Field((0.85, 1.15), description="Range of the random zoom factor.")
    rotation_deg: float = Field(
        15.0, ge=0.0, le=180.0, description="Maximum rotation either way, in degrees."
    )
    shear_deg: float = Field(
        8.0, ge=0.0, lt=45.0, description="Maximum shear either way, in degrees."
    )
    shift: float = Field(
        0.08, ge=0.0, le=0.5, description="Maximum shift as a fraction of the slice size, per axis."
    )
    elastic_p: Probability = Field(0.2, description="Probability of the elastic deformation.")
    elastic_alpha: float = Field(
        4.0, ge=0.0, description="RMS displacement of the elastic field (pixels at 256²)."
    )
    elastic_sigma: float = Field(
        12.0, gt=0.0, description="Smoothness of the elastic field (pixels at 256²)."
    )
    flip_horizontal_p: Probability = Field(
        0.0,
        description="Flip across the vertical axis (image left-right). Off by default: it mirrors "
        "the patient, putting the liver on the wrong side and swapping right/left kidney (their "
        "labels are not swapped).",
    )
    flip_vertical_p: Probability = Field(
        0.5,
        description="Flip across the horizontal axis (anterior-posterior); keeps patient "
        "left-right, so labels stay true.",
    )
    noise_p: Probability = Field(0.3, description="Probability of additive Gaussian noise.")
    noise_std: tuple[float, float] = Field(
        (0.0, 0.03), description="Range the noise's standard deviation is drawn from."
    )
    intensity_p: Probability = Field(
        0.5, description="Probability of a linear intensity change ``x * scale + shift``."
    )
    intensity_scale: tuple[float, float] = Field(
        (0.9, 1.1), description="Range of the intensity factor."
    )
    intensity_shift: float = Field(0.1, ge=0.0, description="Maximum intensity offset either way.")
    histogram_p: Probability = Field(
        0.2,
        description="Probability of a histogram shift: a random monotone piecewise-linear remap.",
    )
    histogram_points: int = Field(
        8, ge=3, le=64, description="Nodes of the random monotone intensity remap."
    )

    @model_validator(mode="after")
    def _ranges_in_order(self) -> AugmentConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for name in ("scale", "noise_std", "intensity_scale"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                problems.append(((name,), f"needs 0 <= lo <= hi, got ({lo}, {hi})"))
        if self.scale[0] <= 0.0:
            problems.append((("scale",), f"must be positive, got {self.scale}"))
        FieldErrors.check(problems)
        return self

    @classmethod
    def geometric_only(cls, **overrides: float | bool) -> AugmentConfig:
        """Geometry always on, intensity off: for checking that masks stay aligned."""
        values: dict[str, float | bool] = {
            "affine_p": 1.0, "elastic_p": 1.0, "noise_p": 0.0, "intensity_p": 0.0, "histogram_p": 0.0,
        }  # fmt: skip
        values.update(overrides)
        return cls(**values)
