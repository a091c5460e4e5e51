"""Losses for multi-label sigmoid logits: Dice, BCE, their weighted sum, the cGAN losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from segmentation_models_pytorch.losses import DiceLoss

from organseg.errors import ConfigError
from organseg.losses import (
    DiceBCELoss,
    SoftDiceLoss,
    bce,
    build_loss,
    discriminator_loss,
    generator_adversarial_loss,
    soft_dice_score,
)

BIG = 30.0  # a logit this large is a certain prediction


def _target(seed: int = 0, shape: tuple[int, ...] = (2, 3, 16, 16)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) > 0.6).float()


def test_dice_of_hand_counted_masks() -> None:
    pred = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    pred[0, 0, :2] = 1  # 8 pixels
    target[0, 0, 1:3] = 1  # 8 pixels, 4 shared
    score = soft_dice_score(pred, target, from_logits=False, smooth=0.0)
    assert score.shape == (1,)
    assert float(score) == pytest.approx(2 * 4 / (8 + 8))


def test_soft_dice_loss_perfect_and_opposite_predictions() -> None:
    target = _target()
    loss = SoftDiceLoss(smooth=1.0)
    assert float(loss(BIG * (2 * target - 1), target)) == pytest.approx(0.0, abs=1e-4)
    assert float(loss(-BIG * (2 * target - 1), target)) > 0.95


def test_empty_organ_counts_unlike_smp() -> None:
    """A spleen predicted on a slice without spleen is penalised (smp's DiceLoss ignores it)."""
    target = _target()
    target[:, 2] = 0  # organ absent from the whole batch
    pred = BIG * (2 * target - 1)
    pred[:, 2, 4:12, 4:12] = BIG  # false positive on the absent organ
    assert float(DiceLoss("multilabel", from_logits=True, smooth=1.0)(pred, target)) < 1e-3
    assert float(SoftDiceLoss(smooth=1.0)(pred, target)) > 0.3
    pred[:, 2] = -BIG  # correctly empty: no penalty, thanks to the smoothing term
    assert float(SoftDiceLoss(smooth=1.0)(pred, target)) == pytest.approx(0.0, abs=1e-4)


def test_matches_smp_dice_when_every_organ_is_present() -> None:
    torch.manual_seed(0)
    target = _target()
    logits = torch.randn(target.shape)
    # smp's smoothing term enters as (I + s) / (½(|P| + |T|) + s), i.e. twice ours
    ours = SoftDiceLoss(smooth=2.0)(logits, target)
    theirs = DiceLoss("multilabel", from_logits=True, smooth=1.0)(logits, target)
    torch.testing.assert_close(ours, theirs)
    binary_theirs = DiceLoss("binary", from_logits=True, smooth=1.0)(logits[:, :1], target[:, :1])
    torch.testing.assert_close(
        SoftDiceLoss(smooth=2.0)(logits[:, :1], target[:, :1]), binary_theirs
    )


def test_binary_masks_without_channel_axis() -> None:
    target = _target(shape=(2, 1, 16, 16))
    logits = torch.randn(target.shape)
    for loss in (SoftDiceLoss(), bce(), DiceBCELoss(0.3)):
        torch.testing.assert_close(loss(logits[:, 0], target[:, 0]), loss(logits, target))


def test_per_sample_dice_keeps_the_batch_axis() -> None:
    target = _target()
    score = soft_dice_score(BIG * (2 * target - 1), target, per_sample=True)
    assert score.shape == (2, 3)
    torch.testing.assert_close(score, torch.ones(2, 3), atol=1e-4, rtol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 5.0))
def test_dice_score_is_bounded_and_one_for_identical_masks(seed: int, smooth: float) -> None:
    target = _target(seed, shape=(1, 2, 8, 8))
    probs = torch.rand(target.shape, generator=torch.Generator().manual_seed(seed + 1))
    score = soft_dice_score(probs, target, from_logits=False, smooth=smooth)
    assert ((score >= 0) & (score <= 1 + 1e-6)).all()
    same = soft_dice_score(target, target, from_logits=False, smooth=smooth)
    present = target.sum((0, 2, 3)) > 0
    torch.testing.assert_close(same[present], torch.ones(int(present.sum())))


def test_bce_is_binary_cross_entropy_on_logits() -> None:
    torch.manual_seed(0)
    target = _target()
    logits = torch.randn(target.shape)
    torch.testing.assert_close(
        bce()(logits, target), F.binary_cross_entropy_with_logits(logits, target)
    )
    # integer masks are accepted as they come from the data pipeline
    torch.testing.assert_close(bce()(logits, target.to(torch.uint8)), bce()(logits, target))


@pytest.mark.parametrize("w", [0.0, 0.25, 0.5, 1.0])
def test_dice_bce_is_the_weighted_sum(w: float) -> None:
    torch.manual_seed(0)
    target = _target()
    logits = torch.randn(target.shape, requires_grad=True)
    combined = DiceBCELoss(dice_weight=w)(logits, target)
    expected = w * SoftDiceLoss()(logits, target) + (1 - w) * bce()(logits, target)
    torch.testing.assert_close(combined, expected)
    combined.backward()
    assert torch.isfinite(logits.grad).all()


def test_build_loss_by_name() -> None:
    assert isinstance(build_loss("dice"), SoftDiceLoss)
    combo = build_loss("dice_bce", dice_weight=0.7)
    assert isinstance(combo, DiceBCELoss)
    assert combo.dice_weight == 0.7
    target = _target()
    logits = torch.randn(target.shape)
    torch.testing.assert_close(build_loss("bce")(logits, target), bce()(logits, target))
    with pytest.raises(ConfigError, match=r"unknown loss 'focal'.*dice_bce"):
        build_loss("focal")
    with pytest.raises(ConfigError, match="dice_weight"):
        build_loss("dice_bce", dice_weight=1.5)


def test_generator_loss_is_minus_log_d_plus_lambda_dice() -> None:
    d_fake = torch.tensor([[-2.0, 0.0, 3.0]])
    seg = torch.tensor(0.4)
    expected = -torch.log(torch.sigmoid(d_fake)).mean() + 10.0 * seg
    torch.testing.assert_close(generator_adversarial_loss(d_fake, seg, lam=10.0), expected)


def test_adversarial_losses_are_stable_for_confident_discriminators() -> None:
    """A discriminator certain the pair is fake (D → 0) gives a large finite loss, not inf/NaN."""
    d_fake = torch.full((2, 1, 6, 6), -200.0, requires_grad=True)
    loss = generator_adversarial_loss(d_fake, torch.tensor(0.0), lam=1.0)
    assert float(loss.detach()) == pytest.approx(200.0)
    loss.backward()
    assert torch.isfinite(d_fake.grad).all()
    assert (d_fake.grad < 0).all()
    d_real = torch.full((2, 1, 6, 6), 200.0)
    assert float(discriminator_loss(d_real, -d_real)) == pytest.approx(0.0, abs=1e-6)
    assert float(discriminator_loss(-d_real, d_real)) == pytest.approx(200.0)


def test_discriminator_loss_is_half_the_real_plus_fake_bce() -> None:
    torch.manual_seed(0)
    real, fake = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
    expected = 0.5 * (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    )
    torch.testing.assert_close(discriminator_loss(real, fake), expected)
