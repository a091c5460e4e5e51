"""Each member overfits one tiny synthetic batch: the wiring learns, it does not only run.

Inputs are 32×32 (the smallest size the five 2× poolings allow) to keep CPU cost low. smp-backed
members are their real architectures; from-scratch members use a narrow width (``base_channels``),
which changes no wiring. Dice is read from the training forward pass (train-mode batch norm), the
same pass the optimiser sees; it must exceed 0.9 on every organ channel within the step budget.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from organseg.losses import DiceBCELoss, discriminator_loss, soft_dice_score
from organseg.models import create_member, get_member_spec, member_names

NARROW = {"base_channels": 8}
#: member -> (kwargs, input channels, batch size, Adam learning rate). Batch 1 where the member has
#: no batch norm; batch-norm members need two samples at the 1×1 bottleneck of a 32×32 input.
OVERFIT: dict[str, tuple[dict[str, Any], int, int, float]] = {
    "ternausnet": ({}, 3, 1, 1e-3),
    "linknet34": ({}, 3, 2, 1e-3),
    "unet_resnet50": ({}, 3, 2, 1e-3),
    "unet_se_resnet50": ({}, 1, 2, 1e-3),
    "v19unet": ({}, 3, 1, 5e-4),
    "sumnet": ({}, 3, 2, 1e-3),
    "dualtail": (NARROW, 1, 2, 1e-2),
    "attention_unet": (NARROW, 1, 2, 1e-2),
    "multipath": (NARROW, 3, 2, 1e-2),  # modality dropout stays on (train mode)
    "cascade": (
        {"stages": ("dualtail", "dualtail"), "stage1_kwargs": NARROW, "stage2_kwargs": NARROW},
        1,
        2,
        1e-2,
    ),
}
MAX_STEPS = 150
CLASSES = 2
SIZE = 32


def test_every_segmenter_has_an_overfit_case() -> None:
    two_d = {n for n in member_names("segmenter") if get_member_spec(n).dims == 2}
    assert set(OVERFIT) == two_d  # 3D members: test_members_3d.py


@pytest.mark.parametrize("name", list(OVERFIT))
def test_member_overfits_one_batch(name: str, make_batch) -> None:
    kwargs, in_ch, n, lr = OVERFIT[name]
    torch.manual_seed(0)
    model = create_member(name, in_ch, CLASSES, **kwargs).train()
    x, y = make_batch(n, in_ch, CLASSES, SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    loss_fn = DiceBCELoss(dice_weight=0.5)
    dice, steps = torch.zeros(CLASSES), 0
    while steps < MAX_STEPS:
        if hasattr(model, "forward_stages"):  # supervise both cascade stages, as the trainer does
            first, out = model.forward_stages(x)
            loss = 0.5 * loss_fn(first, y) + loss_fn(out, y)
        else:
            out = model(x)
            loss = loss_fn(out, y)
        dice = soft_dice_score((out.detach() > 0).float(), y, from_logits=False, smooth=0.0)
        if dice.min() > 0.9:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    assert dice.min() > 0.9, f"{name}: Dice per organ {dice.tolist()} after {steps} steps"


def test_patch_discriminator_learns_to_separate_real_from_fake(make_batch) -> None:
    """ "Overfitting" a discriminator: it tells ground-truth pairs from misplaced masks.

    Real and fake pairs share the same images and their masks the same statistics, so only reading
    the mask against the image separates them; both go through one batch so batch norm cannot leak
    which half is which.
    """
    torch.manual_seed(0)
    x, y = make_batch(2, 1, CLASSES, 64)
    misplaced = torch.roll(y, shifts=(5, -4), dims=(2, 3))
    pairs = torch.cat([torch.cat([x, y], 1), torch.cat([x, misplaced], 1)])
    model = create_member("patch_discriminator", 1 + CLASSES, 1, base_channels=16).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)
    for _ in range(MAX_STEPS):
        d_real, d_fake = model(pairs).chunk(2)
        p_real = torch.sigmoid(d_real).flatten(1).mean(1)
        p_fake = torch.sigmoid(d_fake).flatten(1).mean(1)
        if p_real.min() > 0.9 and p_fake.max() < 0.1:
            break
        optimizer.zero_grad(set_to_none=True)
        discriminator_loss(d_real, d_fake).backward()
        optimizer.step()
    assert p_real.min() > 0.9, p_real.tolist()
    assert p_fake.max() < 0.1, p_fake.tolist()
