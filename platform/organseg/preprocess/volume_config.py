"""How a volumetric (3D) member sees its data: voxel spacing, patch, sampling, augmentation, inference.

A 3D member reads the same normalised pixels as the 2D members (the slice cache's prepared grid) and
resamples them once to its own spacing; this config travels with the member into ``ensemble.yaml`` so
serving rebuilds exactly the training input.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Augment3D = Literal[
    "flip", "transpose", "intensity_shift", "rotate", "scale", "elastic", "translate"
]


class VolumeConfig(BaseModel):
    """Spacing, patch and sampling of one volumetric member (all sizes in voxels, z-y-x order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spacing: tuple[float, float, float] = Field(
        (1.5, 1.5, 3.0),
        description="Voxel spacing (x, y, z) in mm the member works at; volumes are resampled to it once.",
    )
    patch: tuple[int, int, int] = Field(
        (64, 128, 128), description="Training patch and sliding window size (z, y, x) in voxels."
    )
    foreground_fraction: float = Field(
        0.33,
        ge=0.0,
        le=1.0,
        description="Share of patches centred on a random organ voxel (nnU-Net oversampling).",
    )
    patches_per_volume: int = Field(
        4, ge=1, description="Training patches drawn per volume and epoch."
    )
    intensity: Literal["shared", "zscore", "symmetric"] = Field(
        "shared",
        description=(
            "On top of the shared preprocessing: keep it, per-image z-score (each channel on its "
            "own when a dataset's channels are stacked), or scale [0, 1] to [-1, 1]."
        ),
    )
    augment: list[Augment3D] = Field(
        default_factory=lambda: ["flip", "intensity_shift"],
        description="3D augmentations (MONAI transforms), applied to image and mask alike.",
    )
    overlap: float = Field(
        0.5, ge=0.0, lt=1.0, description="Sliding-window overlap between neighbouring windows."
    )
    mirror: bool = Field(
        False, description="Test-time mirroring: also predict flipped copies and average."
    )
    window_batch_size: int = Field(
        2, ge=1, description="Windows per forward pass at inference (Serve may override it)."
    )

    @model_validator(mode="after")
    def _positive(self) -> VolumeConfig:
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if any(p < 8 for p in self.patch):
            raise ValueError(f"patch needs at least 8 voxels per axis, got {self.patch}")
        return self
