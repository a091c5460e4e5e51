import numpy as np
import pytest
import SimpleITK as sitk

from organseg.errors import ConfigError
from organseg.io import Geometry, Modality, Volume


def _volume() -> Volume:
    rng = np.random.default_rng(0)
    geometry = Geometry(
        spacing=(0.7, 0.8, 2.5), origin=(-10.0, 5.0, 300.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    return Volume(
        rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16),
        geometry,
        Modality.MR_T2SPIR,
        {"SeriesDescription": "T2 SPIR", "EchoTime": "80"},
    )


def test_sitk_round_trip_is_lossless() -> None:
    volume = _volume()
    image = volume.to_sitk()
    assert image.GetSize() == (7, 6, 5)
    assert image.GetSpacing() == volume.spacing
    back = Volume.from_sitk(image)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry == volume.geometry
    assert back.modality is Modality.MR_T2SPIR
    assert back.meta == volume.meta


def test_affine_maps_indices_to_world() -> None:
    volume = _volume()
    image = volume.to_sitk()
    affine = volume.geometry.affine()
    for index in [(0, 0, 0), (6, 5, 4), (3, 2, 1)]:
        world = affine @ np.array([*index, 1.0])
        np.testing.assert_allclose(world[:3], image.TransformIndexToPhysicalPoint(index))


def test_2d_image_becomes_single_slice() -> None:
    image = sitk.GetImageFromArray(np.ones((4, 3), np.uint8))
    volume = Volume.from_sitk(image, modality="CT")
    assert volume.shape == (1, 4, 3)
    assert volume.modality is Modality.CT


@pytest.mark.parametrize(
    ("text", "expected"),
    [("CT", Modality.CT), ("t2spir", Modality.MR_T2SPIR), ("InPhase", Modality.MR_T1_IN),
     ("MR-T1-out", Modality.MR_T1_OUT), ("unknown", Modality.UNKNOWN)],
)  # fmt: skip
def test_modality_aliases(text: str, expected: Modality) -> None:
    assert Modality.parse(text) is expected


def test_bad_modality_names_valid_values() -> None:
    with pytest.raises(ConfigError, match="MR-T2SPIR"):
        Modality.parse("PET")


def test_with_array_rejects_other_shape() -> None:
    with pytest.raises(ValueError, match="does not match"):
        _volume().with_array(np.zeros((1, 2, 3)))


def test_geometry_rejects_bad_spacing() -> None:
    with pytest.raises(ValueError, match="positive"):
        Geometry(spacing=(1.0, 0.0, 1.0))
