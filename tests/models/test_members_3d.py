"""Volumetric members: forward/backward at a scaled-down patch, overfitting one volume, building blocks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from organseg.errors import ModelError
from organseg.losses import DiceBCELoss, soft_dice_score
from organseg.models import create_member, list_members
from organseg.models.blocks3d import AttentionGate3d, PixelShuffle3d
from organseg.train.steps import plain_step, supervised_loss

VOLUMETRIC = [s for s in list_members("segmenter") if s.dims == 3]
#: Narrow widths and a patch scaled down from the recipe (same wiring, a fraction of the compute).
SMALL: dict[str, dict[str, Any]] = {
    "unet3d_fullres": {"base_channels": 4, "depth": 3},
    "resunet3d_ps": {"base_channels": 4, "blocks": (1, 2, 2)},
    "ire3d": {"base_channels": 4, "levels": 2, "latent_channels": 8},
    "cascade3d": {
        "net1_levels": 3,
        "net1_channels": 4,
        "net2_levels": 3,
        "net2_channels": 4,
        "crop_size": (8, 16, 16),
    },
}


def _scaled_patch(patch: tuple[int, int, int], factor: int = 4) -> tuple[int, ...]:
    """The recipe's patch shrunk ``factor``-fold per axis (a multiple of 8, at most 48: CPU-sized)."""
    return tuple(min(48, max(8, p // factor // 8 * 8)) for p in patch)


def test_every_volumetric_member_has_a_small_case() -> None:
    assert {s.name for s in VOLUMETRIC} == set(SMALL)
    for spec in VOLUMETRIC:
        assert spec.patch is not None
        assert spec.spacing is not None


@pytest.mark.parametrize("spec", VOLUMETRIC, ids=lambda s: s.name)
def test_forward_backward_at_scaled_patch(spec) -> None:
    torch.manual_seed(0)
    patch = _scaled_patch(spec.patch)
    model = create_member(spec.name, 1, 3, **SMALL[spec.name]).train()
    x = torch.randn(2, 1, *patch)
    y = (torch.rand(2, 3, *patch) > 0.5).float()
    if hasattr(model, "loss_terms"):  # every part trains through one of its losses
        loss = sum(term for _, term, _ in model.loss_terms(x, y, DiceBCELoss()))
    else:  # deep supervision included where there is one
        loss = supervised_loss(model, DiceBCELoss(), x, y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first = next(p for p in model.parameters() if p.dim() == 5)
    assert first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3, *patch)


def test_deep_supervision_outputs_halve_per_level() -> None:
    model = create_member("unet3d_fullres", 1, 2, base_channels=4, depth=4).train()
    outputs = model(torch.randn(1, 1, 16, 32, 32))
    assert [tuple(o.shape[2:]) for o in outputs] == [(16, 32, 32), (8, 16, 16), (4, 8, 8)]


@pytest.mark.parametrize("name", list(SMALL))
def test_indivisible_input_is_rejected_clearly(name: str) -> None:
    model = create_member(name, 1, 1, **SMALL[name]).eval()
    with pytest.raises(ModelError, match="divisible by 4"):
        model(torch.zeros(1, 1, 10, 16, 16))


@pytest.mark.parametrize("name", list(SMALL))
def test_overfits_one_small_volume(name: str) -> None:
    torch.manual_seed(0)
    z, y, x = torch.meshgrid(torch.arange(8), torch.arange(16), torch.arange(16), indexing="ij")
    organ = (((z - 4) / 3.0) ** 2 + ((y - 7) / 5.0) ** 2 + ((x - 9) / 4.0) ** 2 <= 1).float()
    image = (0.6 * organ + 0.1 * torch.randn(8, 16, 16))[None, None]
    target = organ[None, None]
    model = create_member(name, 1, 1, **SMALL[name]).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_step = plain_step(model, DiceBCELoss(), optimizer)  # the trainer's step for this member
    dice = torch.zeros(1)
    for step in range(150):
        train_step(image, target)
        if step % 5 == 4:
            with torch.no_grad():
                model.eval()
                dice = soft_dice_score(
                    (model(image) > 0).float(), target, from_logits=False, smooth=0.0
                )
                model.train()
            if dice.min() > 0.9:
                break
    assert dice.min() > 0.9, f"{name}: Dice {dice.tolist()} after {step + 1} steps"


def test_pixel_shuffle_3d_places_each_of_eight_maps_on_its_octant() -> None:
    x = torch.arange(2 * 16 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 16, 2, 3, 4)
    out = PixelShuffle3d(2)(x)
    assert out.shape == (2, 2, 4, 6, 8)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    source = x[:, c * 8 + i * 4 + j * 2 + k]
                    assert torch.equal(out[:, c, i::2, j::2, k::2], source)
    with pytest.raises(ModelError, match="multiple of 8"):
        PixelShuffle3d(2)(torch.zeros(1, 12, 2, 2, 2))


def test_attention_gate_weights_every_skip_voxel_in_unit_interval() -> None:
    gate = AttentionGate3d(skip_ch=8, gate_ch=16, inter_ch=4)
    skip, signal = (
        torch.randn(2, 8, 8, 16, 16),
        torch.randn(2, 16, 4, 8, 8),
    )  # gate from a coarser level
    alpha = gate.coefficients(skip, signal)
    assert alpha.shape == (2, 1, 8, 16, 16)
    assert bool(((alpha >= 0) & (alpha <= 1)).all())
    torch.testing.assert_close(gate(skip, signal), skip * alpha)


def test_ire3d_losses_each_move_only_their_own_parameters() -> None:
    torch.manual_seed(0)
    model = create_member("ire3d", 1, 1, **SMALL["ire3d"]).train()
    x = torch.randn(1, 1, 8, 16, 16)
    y = (torch.rand(1, 1, 8, 16, 16) > 0.6).float()
    parts = {
        "shape": {"prior", "decoder"},
        "imitation": {"imitating"},
        "segmentation": {"unet"},
    }
    for name, owners in parts.items():
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        terms = {n: (loss, params) for n, loss, params in model.loss_terms(x, y, DiceBCELoss())}
        loss, params = terms[name]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        moved = {
            k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])
        }
        assert moved == owners, f"{name} moved {sorted(moved)}"
        model.zero_grad(set_to_none=True)
    # the shape-consistency term is weighted λ = 0.001, and inference never touches the prior encoder
    assert model.shape_weight == 0.001
    model.eval()
    for p in model.prior.parameters():
        p.data.fill_(float("nan"))
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_partitioned_step_leaves_parameters_without_their_loss_alone() -> None:
    torch.manual_seed(0)
    model = create_member("ire3d", 1, 1, **SMALL["ire3d"]).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    plain_step(model, DiceBCELoss(), optimizer)(
        torch.randn(1, 1, 8, 16, 16), torch.ones(1, 1, 8, 16, 16)
    )
    moved = {k.split(".")[0] for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert moved == {"prior", "decoder", "imitating", "unet"}


def test_cascade3d_crops_where_stage_one_locates() -> None:
    model = create_member("cascade3d", 1, 1, **SMALL["cascade3d"]).eval()
    located = torch.full((1, 1, 8, 32, 32), -5.0)
    located[:, :, 2:6, 10:20, 12:22] = 5.0
    z, y, x = model.box(located)
    assert z.start <= 2
    assert z.stop >= 6
    assert (y.start, y.stop) == (8, 22)  # 10 voxels wide, 15 % margin → 2 either side
    assert (x.start, x.stop) == (10, 24)
    assert model.box(torch.full((1, 1, 8, 32, 32), -5.0)) == (
        slice(0, 8),
        slice(0, 32),
        slice(0, 32),
    )
    with torch.no_grad():
        first, final = model.forward_stages(torch.randn(1, 1, 8, 32, 32))
    assert first.shape == final.shape == (1, 1, 8, 32, 32)
