"""Behaviour specific to the custom members: cascade auto-context, multi-path modality handling,
DualTail-Net's fused tails and SUMNet's unpooling decoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organseg.errors import ModelError
from organseg.models import create_member
from organseg.models.cascade import normalize_context
from organseg.models.multipath import drop_modalities

NARROW = {"base_channels": 8}
SMALL_CASCADE = {
    "stages": ("dualtail", "attention_unet"),
    "stage1_kwargs": NARROW,
    "stage2_kwargs": NARROW,
}


def test_cascade_stage_two_sees_image_and_normalised_stage_one() -> None:
    torch.manual_seed(0)
    model = create_member("cascade", 2, 3, **SMALL_CASCADE).eval()
    assert model.stage2.encoder[0][0].in_channels == 2 + 3  # image ⊕ stage-one map
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        first, second = model.forward_stages(x)
        assert first.shape == second.shape == (2, 3, 64, 64)
        assert torch.equal(model(x), second)
        expected = model.stage2(torch.cat([x, normalize_context(first, "minmax")], dim=1))
    torch.testing.assert_close(second, expected)


def test_cascade_trains_end_to_end() -> None:
    model = create_member("cascade", 1, 2, **SMALL_CASCADE).train()
    model(torch.randn(2, 1, 64, 64)).sum().backward()  # loss on the final logits only
    stage1_grads = [p.grad for p in model.stage1.parameters()]
    assert all(g is not None for g in stage1_grads)
    assert sum(g.abs().sum() for g in stage1_grads) > 0


def test_normalize_context_is_in_unit_range_per_sample_and_channel() -> None:
    logits = torch.randn(3, 2, 16, 16) * 50 + torch.arange(3.0).view(3, 1, 1, 1) * 100
    for mode in ("minmax", "sigmoid"):
        ctx = normalize_context(logits, mode)
        assert ctx.min() >= 0
        assert ctx.max() <= 1
    mm = normalize_context(logits, "minmax").flatten(2)
    torch.testing.assert_close(mm.amin(-1), torch.zeros(3, 2))
    torch.testing.assert_close(mm.amax(-1), torch.ones(3, 2), atol=1e-5, rtol=0)


def test_cascade_rejects_bad_stages_and_passes_weights_only_to_pretrainable_stages() -> None:
    with pytest.raises(ModelError, match="not a segmenter"):
        create_member("cascade", 1, 2, stages=("dualtail", "patch_discriminator"))
    with pytest.raises(ModelError, match="two members"):
        create_member("cascade", 1, 2, stages=("dualtail",))
    with pytest.raises(ModelError, match="context"):
        create_member("cascade", 1, 2, context="softmax", **SMALL_CASCADE)
    # from-scratch stages ignore encoder_weights, so no download is attempted here
    model = create_member("cascade", 1, 2, encoder_weights="imagenet", **SMALL_CASCADE)
    assert model.stage1 is not None


def test_drop_modalities_never_drops_all_and_never_revives_absent_paths() -> None:
    g = torch.Generator().manual_seed(0)
    present = torch.rand(4000, 3, generator=g) > 0.3
    present[:1000] = True
    keep = drop_modalities(present, p=0.9, generator=g)
    has_any = present.any(1)
    assert keep[has_any].any(1).all()  # every sample with a modality keeps at least one
    assert not (keep & ~present).any()  # absent modalities stay absent
    rate = 1 - keep[:1000].float().mean()
    assert 0.5 < rate < 0.9  # heavy dropping happened, tempered by the keep-one rule


def test_multipath_absent_modality_means_black_input_and_no_contribution() -> None:
    torch.manual_seed(0)
    model = create_member("multipath", 3, 2, **NARROW).eval()
    x = torch.randn(2, 3, 64, 64)
    black = x.clone()
    black[:, 1] = 0  # modality 1 missing: a black channel
    present = torch.tensor([[True, False, True]] * 2)
    with torch.no_grad():
        from_zeros = model(black)  # absence inferred from the black channel
        from_mask = model(x, present=present)  # absence stated, channel content ignored
        full = model(x)
    torch.testing.assert_close(from_zeros, from_mask)
    assert not torch.allclose(from_zeros, full)


def test_multipath_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_member("multipath", 3, 1, modality_dropout=0.9, **NARROW)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    with pytest.raises(ValueError, match="3 modality channels"):
        model(torch.randn(1, 2, 64, 64))


def test_dualtail_fuses_two_independent_tails() -> None:
    torch.manual_seed(0)
    model = create_member("dualtail", 1, 2, **NARROW).eval()
    a, b = model.tails
    assert a is not b
    assert all(p is not q for p, q in zip(a.parameters(), b.parameters(), strict=True))
    activations = (torch.nn.ELU, torch.nn.ReLU, torch.nn.PReLU, torch.nn.LeakyReLU)
    assert {type(m) for m in model.modules() if isinstance(m, activations)} == {torch.nn.ELU}
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        t1, t2 = model.forward_tails(x)
        assert not torch.allclose(t1, t2)
        torch.testing.assert_close(model(x), (t1 + t2) / 2)  # the fusion starts as their average


@pytest.mark.parametrize("name", ["dualtail", "sumnet"])
def test_unpooling_decoders_put_values_back_where_the_maxima_were(name: str, monkeypatch) -> None:
    """Max-unpooling with the encoder's indices: at most one non-zero value per 2×2 window."""
    real_unpool = F.max_unpool2d
    seen: list[torch.Tensor] = []

    def recording_unpool(*args, **kwargs):
        out = real_unpool(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(F, "max_unpool2d", recording_unpool)
    torch.manual_seed(0)
    in_ch = 3 if name == "sumnet" else 1
    model = create_member(name, in_ch, 2, **(NARROW if name == "dualtail" else {})).eval()
    with torch.no_grad():
        model(torch.randn(1, in_ch, 64, 64))
    assert len(seen) == (10 if name == "dualtail" else 5)  # five levels (in each of two tails)
    for out in seen:
        windows = out.unfold(2, 2, 2).unfold(3, 2, 2).reshape(*out.shape[:2], -1, 4)
        assert ((windows != 0).sum(-1) <= 1).all()
        assert (windows != 0).any()
