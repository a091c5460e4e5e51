"""Channel layouts: grey slices for 3-channel (ImageNet) encoders, T1 in/out-phase as one 2-channel input."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from organseg.errors import ConfigError, DataError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def to_channels(x: ArrayT, in_channels: int) -> ArrayT:
    """Adapt ``x`` (N, C, H, W) to a network taking ``in_channels`` channels.

    - C == in_channels: unchanged;
    - C == 1: the grey channel repeated (an ImageNet encoder on CT or T2);
    - C == 2 (T1 in, out) → 3: ``[in, out, mean]``; → 1: the mean of the two.
    Anything else has no sensible mapping and raises :class:`ConfigError`.
    """
    if x.ndim != 4:
        raise ValueError(f"to_channels expects (N, C, H, W), got shape {tuple(x.shape)}")
    c = int(x.shape[1])
    if c == in_channels:
        return x
    is_torch = isinstance(x, torch.Tensor)
    if c == 1:
        if is_torch:
            return x.expand(-1, in_channels, -1, -1).contiguous()
        return np.repeat(x, in_channels, axis=1)
    if c == 2 and in_channels in (1, 3):
        mean = (
            x.mean(dim=1, keepdim=True)
            if is_torch
            else x.mean(axis=1, keepdims=True, dtype=x.dtype)
        )
        if in_channels == 1:
            return mean
        return torch.cat([x, mean], dim=1) if is_torch else np.concatenate([x, mean], axis=1)
    raise ConfigError(
        f"cannot feed {c}-channel input to a network with in_channels={in_channels}; "
        "supported: equal counts, 1 → any, and T1 in/out (2) → 1 or 3"
    )


def stack_t1(in_phase: np.ndarray, out_phase: np.ndarray) -> np.ndarray:
    """T1 in- and out-phase volumes (Z, H, W) as one (Z, 2, H, W) array: channel 0 in, channel 1 out."""
    if in_phase.shape != out_phase.shape or in_phase.ndim != 3:
        raise DataError(
            f"T1 in-phase series has shape {tuple(in_phase.shape)} but out-phase series has "
            f"{tuple(out_phase.shape)}; both must be (Z, H, W) of the same size to stack"
        )
    return np.stack([in_phase, out_phase], axis=1)
