"""Whole-volume prediction of 3D members: MONAI's sliding window with Gaussian weighting, optional mirroring.

:func:`predict_volume` is the one path from a prepared volume to a 3D member's probabilities:
``organseg predict --local`` and the Serve member both call it, so they agree bit for bit. Training
validation does not: it runs the window itself (:func:`sliding_window_probs`, without mirroring) on the
volume cache's volumes, already on the member's grid, and scores Dice there, not on the input's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from organseg.io.volume import Geometry
from organseg.preprocess.volume_config import VolumeConfig
from organseg.preprocess.volumes import (
    apply_intensity,
    from_member_grid,
    to_member_grid,
    volume_channels,
)

#: Mirrored copies averaged with ``mirror``: flips of the z and y axes (left-right stays, see augment3d).
MIRROR_AXES: tuple[tuple[int, ...], ...] = ((2,), (3,), (2, 3))


@torch.inference_mode()
def sliding_window_probs(
    model: nn.Module,
    image: torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    mirror: bool = False,
    window_batch_size: int = 2,
) -> torch.Tensor:
    """Sigmoid probabilities ``(K, D, H, W)`` of a ``(C, D, H, W)`` volume on the member's grid.

    Windows of ``patch`` voxels overlap by ``overlap`` and are blended with a Gaussian importance map
    (centres count more than edges); volumes smaller than a window are padded by MONAI and cropped back.
    """
    model.eval()
    device = next(iter(model.parameters())).device
    x = image[None].to(device)

    def windows(batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(batch).float())

    def run(volume: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            volume,
            roi_size=tuple(int(p) for p in patch),
            sw_batch_size=int(window_batch_size),
            predictor=windows,
            overlap=overlap,
            mode="gaussian",
            padding_mode="constant",
            cval=0.0,
        )

    probs = run(x)
    if mirror:
        for axes in MIRROR_AXES:
            probs = probs + torch.flip(run(torch.flip(x, axes)), axes)
        probs = probs / (1 + len(MIRROR_AXES))
    return torch.as_tensor(probs)[0].float().cpu()


@torch.inference_mode()
def predict_volume(
    model: nn.Module,
    prepared: np.ndarray,
    spacing_xyz: Sequence[float],
    cfg: VolumeConfig,
    in_channels: int,
    window_batch_size: int | None = None,
    flip_z: bool = False,
    per_channel: bool = False,
) -> torch.Tensor:
    """A prepared ``(Z, C, S, S)`` volume (spacing ``spacing_xyz``) → ``(Z, K, S, S)`` probabilities on the
    same grid: resample to the member's spacing, its intensity convention, sliding window, resample back.

    ``flip_z``: the slices run toward the feet (:func:`feet_first`); the member sees them head-first, the
    canonical order it was trained in, and the probabilities come back in the input's order.
    ``per_channel``: the channels are a dataset's stacked channels, z-scored each on its own as in
    training (:func:`~organseg.preprocess.volumes.apply_intensity`).
    """
    array = np.asarray(prepared, dtype=np.float32)
    if flip_z:
        array = np.ascontiguousarray(array[::-1])
    image = to_member_grid(array, spacing_xyz, cfg.spacing)
    image = volume_channels(
        apply_intensity(image, cfg.intensity, per_channel=per_channel), in_channels
    )
    probs = sliding_window_probs(
        model,
        image,
        cfg.patch,
        cfg.overlap,
        cfg.mirror,
        window_batch_size or cfg.window_batch_size,
    )
    z, _, h, w = prepared.shape
    out = from_member_grid(probs, (z, h, w)).clamp(0.0, 1.0)
    return torch.flip(out, (0,)) if flip_z else out


def feet_first(geometry: Geometry) -> bool:
    """Whether slice index grows toward the feet (the z axis' world direction points inferior).

    A CHAOS folder read in file-name order and the same series stacked by slice position can differ by
    exactly this flip; 3D members always see volumes head-first, so both give the same masks.
    """
    return bool(geometry.direction_matrix[2, 2] < 0)
