"""Sliding-window prediction of 3D members on the prepared grid."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from organseg.ensemble.sliding import predict_volume, sliding_window_probs
from organseg.preprocess.volume_config import VolumeConfig


class _Echo(nn.Module):
    """Logit = the input's first channel: the window's output is a known function of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.weight


def test_windows_cover_and_blend_the_whole_volume() -> None:
    volume = torch.randn(1, 20, 40, 36)  # not a multiple of the window: MONAI pads and crops back
    probs = sliding_window_probs(_Echo(), volume, (8, 16, 16), overlap=0.5, window_batch_size=3)
    assert probs.shape == (1, 20, 40, 36)
    torch.testing.assert_close(probs, torch.sigmoid(volume), atol=1e-5, rtol=0)


def test_mirroring_averages_flipped_copies_of_a_flip_invariant_model() -> None:
    volume = torch.randn(1, 8, 16, 16)
    plain = sliding_window_probs(_Echo(), volume, (8, 16, 16))
    mirrored = sliding_window_probs(_Echo(), volume, (8, 16, 16), mirror=True)
    torch.testing.assert_close(plain, mirrored, atol=1e-6, rtol=0)


def test_predict_volume_returns_probabilities_on_the_prepared_grid() -> None:
    prepared = np.random.default_rng(0).random((12, 1, 64, 64)).astype(np.float16)
    cfg = VolumeConfig(spacing=(4.0, 4.0, 4.0), patch=(8, 32, 32))
    probs = predict_volume(_Echo(), prepared, (6.0, 6.0, 2.0), cfg, in_channels=1)
    assert probs.shape == (12, 1, 64, 64)
    # resampled there and back: close to the sigmoid of the input, exactly in [0, 1]
    assert (
        float((probs - torch.sigmoid(torch.from_numpy(prepared.astype(np.float32)))).abs().mean())
        < 0.05
    )
    assert float(probs.min()) >= 0.0
    assert float(probs.max()) <= 1.0


def test_feet_first_volumes_are_seen_head_first() -> None:
    from organseg.ensemble.sliding import feet_first
    from organseg.io.volume import Geometry

    class _Ramp(nn.Module):  # not invariant to a z flip: adds a ramp along z
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ramp = torch.linspace(-2, 2, x.shape[2]).view(1, 1, -1, 1, 1)
            return x[:, :1] * self.weight + ramp

    prepared = np.random.default_rng(1).random((8, 1, 32, 32)).astype(np.float16)
    cfg = VolumeConfig(spacing=(2.0, 2.0, 2.0), patch=(8, 32, 32))
    head_first = predict_volume(_Ramp(), prepared, (2.0, 2.0, 2.0), cfg, 1)
    reversed_input = np.ascontiguousarray(prepared[::-1])
    feet = predict_volume(_Ramp(), reversed_input, (2.0, 2.0, 2.0), cfg, 1, flip_z=True)
    torch.testing.assert_close(torch.flip(feet, (0,)), head_first)
    assert feet_first(Geometry(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)))
    assert not feet_first(Geometry())
