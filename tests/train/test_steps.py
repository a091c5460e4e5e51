"""The training modes the loop switches between: plain, cascade (both stages supervised) and cGAN."""

from __future__ import annotations

import torch

from organseg.losses import build_loss
from organseg.models import create_member
from organseg.train.steps import AdversarialParts, adversarial_step, plain_step, supervised_loss


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
    losses = [step(x, y) for _ in range(15)]
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
    losses = [step(x, y) for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, _params(generator), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, _params(discriminator), strict=True))
    assert all(p.requires_grad for p in discriminator.parameters())  # frozen only during the G step
    with (
        torch.no_grad()
    ):  # the adversarial total need not fall (D learns too); the segmentation must
        assert float(dice(generator(x), y)) < seg_before
