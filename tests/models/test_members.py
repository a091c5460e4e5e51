"""Every registered member builds, runs forward and backward on CPU, and keeps the output contract."""

from __future__ import annotations

import pytest
import torch

from organseg.models import create_member, list_members

SIZE = 64
SEGMENTERS = [s for s in list_members("segmenter") if s.dims == 2]  # 3D: test_members_3d.py
SMP_BACKED = [s.name for s in list_members() if s.smp_backed]


def _check_forward_backward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.train()
    out = model(x)
    assert torch.isfinite(out).all()
    # a loss that depends on every output pixel, so every layer receives a gradient
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.rand_like(out))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads, "member has no trainable parameters"
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first = next(p for p in model.parameters() if p.dim() == 4)  # the layer that sees the input
    assert first.grad.abs().sum() > 0, "no gradient reaches the first convolution"
    return out


@pytest.mark.parametrize("spec", SEGMENTERS, ids=lambda s: s.name)
def test_segmenter_forward_backward(spec) -> None:
    torch.manual_seed(0)
    in_ch, classes = spec.recommended_in_channels, 4
    n = (
        1 if spec.pretrainable else 2
    )  # one sample through the big ImageNet encoders keeps CPU cost low
    model = create_member(spec.name, in_ch, classes)
    out = _check_forward_backward(model, torch.randn(n, in_ch, SIZE, SIZE))
    assert out.shape == (n, classes, SIZE, SIZE)


@pytest.mark.parametrize("name", SMP_BACKED)
@pytest.mark.parametrize(("in_ch", "classes"), [(1, 1), (1, 4), (3, 1)])
def test_smp_backed_channel_variants(name: str, in_ch: int, classes: int) -> None:
    # (3, 4) is covered by test_segmenter_forward_backward
    torch.manual_seed(0)
    model = create_member(name, in_ch, classes)
    out = _check_forward_backward(model, torch.randn(1, in_ch, SIZE, SIZE))
    assert out.shape == (1, classes, SIZE, SIZE)


def test_patch_discriminator_forward_backward() -> None:
    torch.manual_seed(0)
    image_ch, organs = 1, 4
    model = create_member("patch_discriminator", image_ch + organs, 1)
    out = _check_forward_backward(model, torch.randn(2, image_ch + organs, SIZE, SIZE))
    # 4×4 convs, strides 2, 2, 2, 1, 1 with padding 1: 64 → 32 → 16 → 8 → 7 → 6
    assert out.shape == (2, 1, 6, 6)


@pytest.mark.parametrize("spec", SEGMENTERS, ids=lambda s: s.name)
@pytest.mark.parametrize(("h", "w"), [(96, 160), (160, 96)])
def test_any_size_divisible_by_32(spec, h: int, w: int) -> None:
    # shapes only, on the meta device: costs no compute
    with torch.device("meta"):
        model = create_member(spec.name, spec.recommended_in_channels, 2).eval()
        out = model(torch.zeros(1, spec.recommended_in_channels, h, w))
    assert tuple(out.shape) == (1, 2, h, w)


@pytest.mark.parametrize("name", ["v19unet", "sumnet", "ternausnet"])
def test_size_not_divisible_by_32_is_rejected_clearly(name: str) -> None:
    with torch.device("meta"):
        model = create_member(name, 3, 1).eval()
        with pytest.raises(ValueError, match="divisible by 32"):
            model(torch.zeros(1, 3, 80, 64))
