"""The training modes the loop switches between: plain, cascade (both stages supervised) and cGAN.

Every step reports its loss terms by name; they add up to the total it optimised, and the total (and
hence what the optimiser minimises) is bit for bit the loss as written before there were terms.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from organseg.losses import SoftDiceLoss, bce, build_loss, discriminator_loss
from organseg.models import create_member
from organseg.train.core import epoch_losses
from organseg.train.steps import (
    AdversarialParts,
    StepLosses,
    adversarial_step,
    deep_supervision_loss,
    deep_supervision_terms,
    plain_step,
    supervised_loss,
)


def _batch(channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    y = torch.zeros(2, 1, 32, 32)
    y[:, :, 8:24, 6:20] = 1.0
    x = y.repeat(1, channels, 1, 1) * 0.8 + 0.1 * torch.randn(2, channels, 32, 32)
    return x, y


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_cascade_is_supervised_at_both_stages() -> None:
    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 3}
    model = create_member("cascade", 1, 1, stages=("attention_unet", "attention_unet"),
                          stage1_kwargs=kwargs, stage2_kwargs=kwargs)  # fmt: skip
    loss_fn = build_loss("dice_bce", 0.5)
    x, y = _batch()
    stage1, stage2 = model.forward_stages(x)
    expected = 0.5 * loss_fn(stage1, y) + loss_fn(stage2, y)
    assert torch.allclose(supervised_loss(model, loss_fn, x, y), expected)
    # both stages receive gradients from one step
    before = [_params(model.stage1), _params(model.stage2)] if hasattr(model, "stage1") else None
    step = plain_step(model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-2))
    losses = [step(x, y).total for _ in range(15)]
    assert losses[-1] < losses[0]
    if before is not None:
        for old, stage in zip(before, (model.stage1, model.stage2), strict=True):
            assert any(not torch.equal(a, b) for a, b in zip(old, _params(stage), strict=True))


def test_adversarial_step_updates_generator_and_discriminator() -> None:
    torch.manual_seed(0)
    generator = create_member("attention_unet", 1, 1, base_channels=4, depth=3)
    discriminator = create_member("patch_discriminator", 2, 1, base_channels=8)
    parts = AdversarialParts(
        discriminator, torch.optim.Adam(discriminator.parameters(), lr=1e-3), lam=10.0
    )
    step = adversarial_step(
        generator, build_loss("dice"), torch.optim.Adam(generator.parameters(), lr=1e-2), parts
    )
    g_before, d_before = _params(generator), _params(discriminator)
    x, y = _batch()
    dice = build_loss("dice")
    with torch.no_grad():
        seg_before = float(dice(generator(x), y))
    losses = [step(x, y).total for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, _params(generator), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, _params(discriminator), strict=True))
    assert all(p.requires_grad for p in discriminator.parameters())  # frozen only during the G step
    with (
        torch.no_grad()
    ):  # the adversarial total need not fall (D learns too); the segmentation must
        assert float(dice(generator(x), y)) < seg_before


def _adds_up(losses: StepLosses) -> None:
    assert losses.total == pytest.approx(sum(losses.terms.values()), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("dice_weight", [0.5, 0.3])  # 0.3: a weighting the tuner may sample
def test_plain_step_reports_dice_and_bce_and_optimises_the_same_loss(dice_weight: float) -> None:
    torch.manual_seed(0)
    model = create_member("attention_unet", 1, 1, base_channels=4, depth=3)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2)
    ref_optimizer.load_state_dict(optimizer.state_dict())
    step = plain_step(model, build_loss("dice_bce", dice_weight), optimizer)
    x, y = _batch()
    for _ in range(2):
        # the step as written before it reported terms: one summed loss, backward, step
        ref_optimizer.zero_grad(set_to_none=True)
        out = reference(x)
        dice, cross = SoftDiceLoss()(out, y), bce()(out, y)
        written = float(dice.detach()), float(cross.detach())
        loss = dice_weight * dice + (1.0 - dice_weight) * cross
        loss.backward()
        ref_optimizer.step()

        losses = step(x, y)
        assert losses.total == float(loss.detach())  # bit-equal: the optimised value did not change
        assert list(losses.terms) == ["dice", "bce"]
        assert losses.terms["dice"] == pytest.approx(dice_weight * written[0], rel=1e-6)
        assert losses.terms["bce"] == pytest.approx((1 - dice_weight) * written[1], rel=1e-6)
        assert losses.apart == {}
        _adds_up(losses)
    for new, old in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(new, old)  # the same updates, bit for bit


def test_a_single_loss_is_its_own_term() -> None:
    torch.manual_seed(0)
    model = create_member("attention_unet", 1, 1, base_channels=4, depth=3)
    x, y = _batch()
    for name in ("dice", "bce"):
        losses = plain_step(model, build_loss(name), torch.optim.SGD(model.parameters(), lr=0))(
            x, y
        )
        assert losses.terms == {name: losses.total}


def test_cascade_step_reports_each_stage_s_terms() -> None:
    torch.manual_seed(0)
    kwargs = {"base_channels": 4, "depth": 3}
    model = create_member("cascade", 1, 1, stages=("attention_unet", "attention_unet"),
                          stage1_kwargs=kwargs, stage2_kwargs=kwargs)  # fmt: skip
    loss_fn = build_loss("dice_bce", 0.5)
    x, y = _batch()
    with torch.no_grad():
        stage1, stage2 = model.forward_stages(x)
        expected = float(0.5 * loss_fn(stage1, y) + loss_fn(stage2, y))
        stage1_dice = 0.5 * 0.5 * float(SoftDiceLoss()(stage1, y))
    losses = plain_step(model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-2))(x, y)
    assert losses.total == expected
    assert list(losses.terms) == ["stage1_dice", "stage1_bce", "stage2_dice", "stage2_bce"]
    assert losses.terms["stage1_dice"] == pytest.approx(stage1_dice, rel=1e-6)
    _adds_up(losses)


def test_deep_supervision_terms_sum_over_levels() -> None:
    torch.manual_seed(0)
    y = (torch.rand(2, 1, 8, 16, 16) > 0.5).float()
    outputs = [torch.randn(2, 1, 8, 16, 16), torch.randn(2, 1, 4, 8, 8), torch.randn(2, 1, 2, 4, 4)]
    loss_fn = build_loss("dice_bce", 0.4)
    loss, terms = deep_supervision_terms(loss_fn, outputs, y)
    assert torch.equal(loss, deep_supervision_loss(loss_fn, outputs, y))
    # the formula before terms: weights 4/7, 2/7, 1/7 on the whole loss of each level
    written = outputs[0].new_zeros(())
    for weight, out in zip((4 / 7, 2 / 7, 1 / 7), outputs, strict=True):
        written = written + weight * loss_fn(out, F.interpolate(y, size=out.shape[2:]))
    assert float(loss) == pytest.approx(float(written), rel=1e-6)
    assert list(terms) == ["dice", "bce"]
    assert float(terms["dice"] + terms["bce"]) == pytest.approx(float(loss), rel=1e-6)


def test_partitioned_step_reports_each_separately_optimised_loss() -> None:
    torch.manual_seed(0)
    model = create_member("ire3d", 1, 1, base_channels=4, levels=2, latent_channels=8).train()
    x, y = torch.randn(1, 1, 8, 16, 16), (torch.rand(1, 1, 8, 16, 16) > 0.6).float()
    with torch.no_grad():
        expected = {n: float(v) for n, v, _ in model.loss_terms(x, y, build_loss("dice"))}
    losses = plain_step(model, build_loss("dice"), torch.optim.Adam(model.parameters()))(x, y)
    assert losses.terms == expected
    assert losses.total == sum(expected.values())  # as summed before there were terms


def test_adversarial_step_reports_generator_terms_and_the_discriminator_apart() -> None:
    torch.manual_seed(0)
    generator = create_member("attention_unet", 1, 1, base_channels=4, depth=3)
    discriminator = create_member("patch_discriminator", 2, 1, base_channels=8)
    lam, dice = 10.0, build_loss("dice")
    parts = AdversarialParts(
        discriminator, torch.optim.Adam(discriminator.parameters(), lr=1e-3), lam=lam
    )
    x, y = _batch()
    d_before = copy.deepcopy(discriminator)
    with torch.no_grad():
        logits = generator(x)
        fake = torch.cat([x, torch.sigmoid(logits)], dim=1)
        d_expected = float(discriminator_loss(d_before(torch.cat([x, y], 1)), d_before(fake)))
        seg = dice(logits, y)
    step = adversarial_step(
        generator, dice, torch.optim.Adam(generator.parameters(), lr=1e-2), parts
    )
    losses = step(x, y)
    with torch.no_grad():  # the generator is judged by the discriminator after its update
        d_fake = discriminator(fake)
        adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
    assert losses.total == float(adv + lam * seg)  # what the generator's optimiser minimised
    assert losses.terms == {
        "generator_adv": pytest.approx(float(adv), rel=1e-6),
        "generator_seg": pytest.approx(lam * float(seg), rel=1e-6),
    }
    _adds_up(losses)
    assert losses.apart == {"discriminator": pytest.approx(d_expected, rel=1e-6)}


def test_an_epoch_averages_each_term() -> None:
    steps = [
        StepLosses(1.0, {"generator_adv": 0.25, "generator_seg": 0.75}, {"discriminator": 0.5}),
        StepLosses(3.0, {"generator_adv": 0.75, "generator_seg": 2.25}, {"discriminator": 0.7}),
    ]
    assert epoch_losses(steps) == {
        "train_loss": 2.0,
        "train_loss_generator_adv": 0.5,
        "train_loss_generator_seg": 1.5,
        "train_loss_discriminator": pytest.approx(0.6),
    }
    assert epoch_losses([]) == {"train_loss": pytest.approx(float("nan"), nan_ok=True)}
