"""Label sets: SNOMED CT codes checked against pydicom's bundled dictionary, defaults, nnU-Net/MSD parsing."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from organseg.errors import DataError
from organseg.labels import (
    PALETTE,
    PRIVATE_SCHEME,
    STRUCTURE_CODES,
    LabelSet,
    chaos_label_set,
    code_for,
)
from organseg.organs import ORGAN_COLOURS, ORGAN_LABELS

#: Table entry → the name of the same concept in pydicom's SNOMED CT dictionary.
PYDICOM_NAMES = {
    "liver": "Liver",
    "spleen": "Spleen",
    "right_kidney": "Kidney",
    "left_kidney": "Kidney",
    "kidney": "Kidney",
    "gallbladder": "Gallbladder",
    "esophagus": "Esophagus",
    "stomach": "Stomach",
    "aorta": "Aorta",
    "inferior_vena_cava": "InferiorVenaCava",
    "portal_vein": "PortalVein",
    "pancreas": "Pancreas",
    "right_adrenal_gland": "AdrenalGland",
    "left_adrenal_gland": "AdrenalGland",
    "duodenum": "Duodenum",
    "urinary_bladder": "Bladder",
    "prostate": "Prostate",
    "uterus": "Uterus",
    "colon": "Colon",
    "small_intestine": "SmallIntestine",
}
#: The 15 labels of AMOS's dataset.json, spelled as it spells them.
AMOS = [
    "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver", "stomach", "arota",
    "postcava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
    "prostate/uterus",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(STRUCTURE_CODES))
def test_table_codes_are_pydicoms(name: str) -> None:
    entry = STRUCTURE_CODES[name]
    expected = getattr(codes.SCT, PYDICOM_NAMES[name])
    assert (entry.type.value, entry.type.scheme) == (expected.value, expected.scheme_designator)
    assert entry.type.meaning.lower() == expected.meaning.lower()
    assert (entry.category.value, entry.category.meaning) == (
        codes.SCT.AnatomicalStructure.value,
        codes.SCT.AnatomicalStructure.meaning,
    )
    side = name.split("_")[0]
    if side in ("right", "left"):
        laterality = codes.SCT.Right if side == "right" else codes.SCT.Left
        assert entry.laterality is not None
        assert (entry.laterality.value, entry.laterality.meaning) == (
            laterality.value,
            laterality.meaning,
        )
    else:
        assert entry.laterality is None


def test_amos_labels_get_their_organ_code_or_a_generic_one() -> None:
    found = {name: code_for(name) for name in AMOS}
    assert sum(not c.generic for c in found.values()) == 14
    assert found["arota"].type.meaning == "Aorta"
    assert found["postcava"].type.meaning == "Inferior vena cava"
    assert found["right kidney"].laterality.meaning == "Right"  # type: ignore[union-attr]
    # one AMOS label stands for two organs: no single organ code is right, so none is given
    mixed = found["prostate/uterus"]
    assert mixed.generic
    assert mixed.type.scheme == PRIVATE_SCHEME
    assert mixed.type.meaning == "prostate/uterus"


def test_unknown_label_keeps_its_name_and_every_component() -> None:
    labels = LabelSet.from_nnunet({"background": 0, "liver": 1, "tumour": 2, "aorta": 3})
    tumour = labels["tumour"]
    assert tumour.code.generic
    assert tumour.code.type.meaning == "tumour"
    assert not tumour.largest_component
    assert labels["liver"].largest_component
    assert not labels["aorta"].largest_component


def test_chaos_preset_is_the_organs_vocabulary() -> None:
    preset = chaos_label_set()
    assert dict(zip(preset.names, preset.values, strict=True)) == dict(ORGAN_LABELS)
    assert {lb.name: lb.colour for lb in preset} == dict(ORGAN_COLOURS)
    assert all(lb.largest_component for lb in preset)
    kidney = preset["left_kidney"].code
    assert kidney.type.value == codes.SCT.Kidney.value
    assert kidney.laterality.value == codes.SCT.Left.value


def test_palette_keeps_sixteen_labels_apart() -> None:
    labels = LabelSet.from_names([f"structure {i}" for i in range(16)])
    assert len({lb.colour for lb in labels}) == 16
    assert len(set(PALETTE)) == len(PALETTE) >= 16


def test_ignore_and_regions() -> None:
    labels = LabelSet.from_nnunet({"background": 0, "liver": 1, "spleen": 2, "ignore": 3})
    assert labels.ignore == 3
    assert labels.allowed_values() == {0, 1, 2, 3}
    assert "ignore" not in labels.names
    regions = LabelSet.from_nnunet(
        {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]},
        regions_class_order=[1, 2, 3],
    )
    assert regions.region_based
    assert regions["core"].region == (2, 3)
    assert regions.values == (1, 2, 3)
    assert regions.allowed_values() == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("labels", "order", "key"),
    [
        ({"background": 0, "liver": 1, "ignore": 1}, None, "labels.ignore"),
        ({"background": 0, "liver": 2, "ignore": 1}, None, "labels.ignore"),
        ({"background": 0, "whole": [1, 2], "core": [2]}, None, "regions_class_order"),
        ({"background": 0, "liver": 1, "spleen": 3}, None, "labels"),
        ({"background": 1, "liver": 2}, None, "labels.background"),
        ({"background": 0, "liver": 1.5}, None, "labels.liver"),
    ],
)
def test_bad_nnunet_labels_name_the_key(labels: dict, order: list | None, key: str) -> None:
    with pytest.raises(DataError) as caught:
        LabelSet.from_nnunet(labels, order)
    assert f"{key}:" in str(caught.value)


def test_msd_labels_and_round_trips() -> None:
    labels = LabelSet.from_msd({"0": "background", "1": "liver", "2": "pancreas"})
    assert labels.names == ("liver", "pancreas")
    assert labels.values == (1, 2)
    assert LabelSet.from_dict(labels.to_dict()) == labels
    assert LabelSet.from_nnunet(labels.to_nnunet()).names == labels.names
    with pytest.raises(DataError, match=r"labels\.0"):
        LabelSet.from_msd({"1": "liver"})


def test_user_codes_replace_the_generic_one() -> None:
    from organseg.labels import Code, StructureCode

    labels = LabelSet.from_names(["liver", "lesion"])
    lesion = StructureCode(
        Code("49755003", "SCT", "Morphologically Abnormal Structure"),
        Code("52988006", "SCT", "Lesion"),
    )
    coded = labels.with_codes({"lesion": lesion})
    assert coded["lesion"].code == lesion
    assert coded["liver"].code == labels["liver"].code
    with pytest.raises(DataError, match="unknown label"):
        labels.with_codes({"kidney": lesion})
