"""Shared helpers for the model-zoo tests: two CPU threads and a tiny synthetic multi-organ batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

torch.set_num_threads(2)

Batch = tuple[torch.Tensor, torch.Tensor]


def synthetic_batch(n: int, in_channels: int, classes: int, size: int, seed: int = 0) -> Batch:
    """Images with one disc or square per organ channel at a distinct grey level, plus noise.

    Returns ``(x, y)``: x is N×in_channels×size×size, y the float one-hot N×classes×size×size target
    (organs may overlap: the targets are multi-label). Every input channel shows every organ, so a
    member may drop any modality and still see them.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    y = torch.zeros(n, classes, size, size)
    for i in range(n):
        for j in range(classes):
            cy, cx = torch.randint(size // 4, size - size // 4, (2,), generator=g).tolist()
            r = int(torch.randint(size // 10, size // 6, (1,), generator=g))
            if j % 2 == 0:
                y[i, j] = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).float()
            else:
                y[i, j] = (((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)).float()
    grey = torch.arange(1, classes + 1, dtype=torch.float32).view(1, classes, 1, 1) / classes
    image = (y * grey).amax(dim=1, keepdim=True)
    x = torch.cat(
        [
            image * (1 + 0.5 * c) + 0.1 * torch.randn(image.shape, generator=g)
            for c in range(in_channels)
        ],
        dim=1,
    )
    return x, y


@pytest.fixture
def make_batch() -> Callable[..., Batch]:
    return synthetic_batch
