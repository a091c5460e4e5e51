"""3D patch augmentation from MONAI transforms, seeded per item like the 2D augmenter.

Names (``VolumeConfig.augment``) map to the seeds' lists: mirroring, transposition (in-plane 90°
rotation), intensity shift, and one affine for rotation, scaling and translation, plus elastic
deformation. Mirroring acts on the z and y axes (cranio-caudal, antero-posterior): a left-right flip
would put the liver on the wrong side and swap the kidneys' labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAffined,
    RandFlipd,
    RandRotate90d,
    RandShiftIntensityd,
)

KEYS = ("image", "label")


class Augment3D:
    """``(image (C, D, H, W), labels (D, H, W)) → same``, geometry shared, labels nearest-neighbour."""

    def __init__(self, names: Sequence[str]) -> None:
        names = set(names)
        steps: list = []
        if "flip" in names:
            steps += [RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in (0, 1)]
        if "transpose" in names:
            steps.append(RandRotate90d(KEYS, prob=0.5, max_k=3, spatial_axes=(1, 2)))
        affine = {
            "rotate_range": (math.radians(5), 0, 0) if "rotate" in names else None,
            "scale_range": (0.15, 0.15, 0.15) if "scale" in names else None,
            "translate_range": (4, 16, 16) if "translate" in names else None,
        }
        if any(v is not None for v in affine.values()):
            # rotation about the z axis (in-plane), the dominant patient misalignment
            steps.append(
                RandAffined(
                    KEYS,
                    prob=0.5,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                    **{k: v for k, v in affine.items() if v is not None},
                )
            )
        if "elastic" in names:
            steps.append(
                Rand3DElasticd(
                    KEYS,
                    sigma_range=(5, 7),
                    magnitude_range=(50, 100),
                    prob=0.2,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                )
            )
        if "intensity_shift" in names:
            steps.append(RandShiftIntensityd(("image",), offsets=0.1, prob=0.5))
        self.compose = Compose(steps)

    def __call__(
        self, image: torch.Tensor, labels: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.compose.set_random_state(seed=seed)
        out = self.compose({"image": image, "label": labels[None].float()})
        image = _plain(out["image"]).float()
        labels = _plain(out["label"])[0].round().to(torch.uint8)
        return image, labels


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors, which DataLoader collation and DDP need not carry)."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def build_augment3d(names: Sequence[str]) -> Augment3D:
    return Augment3D(names)
