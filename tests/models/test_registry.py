"""The registry contract other modules rely on: names, specs, errors that name what is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from organseg.errors import ModelError
from organseg.models import create_member, get_member_spec, list_members, member_names, registry

EXPECTED = {
    "dualtail",
    "ternausnet",
    "linknet34",
    "unet_resnet50",
    "unet_se_resnet50",
    "v19unet",
    "cascade",
    "patch_discriminator",
    "sumnet",
    "multipath",
    "attention_unet",
    "unet3d_fullres",
    "resunet3d_ps",
    "ire3d",
    "cascade3d",
}
DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-member.md"


def test_all_issue_members_are_registered() -> None:
    assert set(member_names()) == EXPECTED
    assert member_names("discriminator") == ["patch_discriminator"]


def test_spec_fields_follow_the_design() -> None:
    for spec in list_members():
        if spec.kind == "discriminator":
            continue
        dice_members = {"dualtail", "linknet34", "resunet3d_ps", "ire3d", "cascade3d"}
        expected = "dice" if spec.name in dice_members else "dice_bce"
        assert spec.default_loss == expected, spec.name
        assert spec.recommended_in_channels >= 1
        assert spec.description
    smp = {s.name for s in list_members() if s.smp_backed}
    assert smp == {
        "ternausnet",
        "linknet34",
        "unet_resnet50",
        "unet_se_resnet50",
        "v19unet",
        "sumnet",
    }
    assert all(get_member_spec(n).pretrainable for n in smp)
    assert not get_member_spec("dualtail").pretrainable


def test_unknown_member_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="unknown model member 'unet3d'") as info:
        create_member("unet3d", 1, 4)
    assert all(name in str(info.value) for name in EXPECTED)


def test_bad_kwarg_lists_valid_parameters() -> None:
    with pytest.raises(ModelError, match=r"unknown parameter\(s\) \['widht'\]") as info:
        create_member("dualtail", 1, 4, widht=3)
    assert "base_channels=32" in str(info.value)
    assert "depth=5" in str(info.value)


@pytest.mark.parametrize(("arg", "value"), [("in_channels", 0), ("classes", -1), ("classes", 2.0)])
def test_bad_channel_counts_are_model_errors(arg: str, value: object) -> None:
    args = {"in_channels": 1, "classes": 4, arg: value}
    with pytest.raises(ModelError, match=arg):
        create_member("attention_unet", **args)


def test_weights_for_a_from_scratch_member_are_refused() -> None:
    with pytest.raises(ModelError, match="trained from scratch") as info:
        create_member("dualtail", 1, 4, encoder_weights="imagenet")
    assert "linknet34" in str(info.value)  # names the pretrainable members


def test_unknown_weights_name_lists_the_available_ones() -> None:
    # fails on smp's settings table, before any download is attempted
    with pytest.raises(ModelError, match=r"no 'instagram' weights.*'imagenet'"):
        create_member("linknet34", 3, 4, encoder_weights="instagram")


def test_bad_member_values_are_model_errors() -> None:
    with pytest.raises(ModelError, match="decoder must be 'smp' or 'transposed'"):
        create_member("unet_resnet50", 3, 4, decoder="bilinear")
    with pytest.raises(ModelError, match="modality_dropout"):
        create_member("multipath", 3, 4, modality_dropout=1.0)


def test_transposed_decoder_option_for_smp_unets() -> None:
    with torch.device("meta"):
        smp_default = create_member("unet_resnet50", 3, 4)
        seed_style = create_member("unet_resnet50", 3, 4, decoder="transposed")
    assert type(smp_default).__name__ == "Unet"
    kinds = {type(m) for m in seed_style.decoder.modules()}
    assert torch.nn.ConvTranspose2d in kinds
    assert torch.nn.BatchNorm2d not in kinds  # conv+ReLU, as the seed's decoders


def test_adding_a_member_doc_example_works() -> None:
    """The doc's member file and registry line are real code: run them and build the member."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2, "the doc shows the member file and the registry line"
    member_file, registry_line = blocks[0], blocks[1]
    assert "MEMBER_MODULES" in registry_line
    name = re.search(r'@register_member\(\s*"(\w+)"', member_file).group(1)
    try:
        exec(compile(member_file, str(DOC), "exec"), {"__name__": "doc_member"})
        spec = get_member_spec(name)
        model = create_member(name, 1, 4)
        out = model(torch.randn(2, 1, 64, 64))
        assert out.shape == (2, 4, 64, 64)
        assert spec in list_members("segmenter")
    finally:
        registry._REGISTRY.pop(name, None)
