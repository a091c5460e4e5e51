"""Channel builders for ImageNet encoders and T1 in/out stacking."""

import numpy as np
import pytest
import torch

from organseg.errors import ConfigError, DataError
from organseg.preprocess import stack_t1, to_channels


def test_same_count_is_unchanged_and_grey_repeats() -> None:
    x = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    assert to_channels(x, 3) is x
    grey = x[:, :1]
    out = to_channels(grey, 3)
    assert out.shape == (2, 3, 4, 4)
    for c in range(3):
        np.testing.assert_array_equal(out[:, c], grey[:, 0])
    t = to_channels(torch.from_numpy(grey), 3)
    assert isinstance(t, torch.Tensor)
    assert t.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(t.numpy(), out)


@pytest.mark.parametrize("as_torch", [False, True])
def test_t1_pair_to_three_and_one(as_torch: bool) -> None:
    pair = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 3.0)])[None].astype(np.float32)
    x = torch.from_numpy(pair) if as_torch else pair
    three, one = to_channels(x, 3), to_channels(x, 1)
    three, one = np.asarray(three), np.asarray(one)
    assert three.shape == (1, 3, 4, 4)
    assert one.shape == (1, 1, 4, 4)
    np.testing.assert_array_equal(three[0, :, 0, 0], [1.0, 3.0, 2.0])  # in, out, mean
    assert np.all(one == 2.0)


def test_impossible_channel_mapping_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"3-channel input .* in_channels=2"):
        to_channels(np.zeros((1, 3, 4, 4)), 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        to_channels(np.zeros((3, 4, 4)), 3)


def test_stack_t1_orders_channels_and_checks_shapes() -> None:
    a, b = np.zeros((5, 8, 8)), np.ones((5, 8, 8))
    stacked = stack_t1(a, b)
    assert stacked.shape == (5, 2, 8, 8)
    assert not stacked[:, 0].any()
    assert stacked[:, 1].all()
    with pytest.raises(DataError, match=r"in-phase .*out-phase"):
        stack_t1(a, np.ones((6, 8, 8)))
