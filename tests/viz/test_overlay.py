"""Overlay PNGs: the prediction filled and the reference outlined in each scored organ's colour, text
bands (case, slice from 1, mm position, disclaimer, flags, legend), orientation letters, slice choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.viz import (
    choose_slices,
    disagreement_flags,
    display_window,
    image_box,
    prediction_flags,
    render_overlays,
    volume_flags,
)
from organseg.viz.overlay import DISCLAIMER, orientation_letters, slice_position_mm

H, W, DEPTH = 64, 256, 10  # 256 columns: shown at scale 1, so image pixels are array pixels
#: 40 % of each organ colour over a black (air) background: round(0.4 * c).
BLENDED_ON_BLACK = {1: (102, 102, 0), 2: (102, 0, 102), 3: (0, 102, 102), 4: (102, 56, 0)}
PURE = {1: (255, 255, 0), 2: (255, 0, 255), 3: (0, 255, 255), 4: (255, 140, 0)}
FLAG_TEXT = (255, 170, 60)
KEY = (170, 170, 170)


@pytest.fixture
def case() -> tuple[Volume, Volume, Volume]:
    """CT of air (-1000 HU, black) with four organs; liver largest at z=3, spleen at z=7, the
    reference liver largest at z=5, a reference kidney at z=3."""
    image = Volume(np.full((DEPTH, H, W), -1000, np.int16), modality=Modality.CT)
    labels = np.zeros((DEPTH, H, W), np.uint8)
    for z, half in ((2, 6), (3, 12), (4, 8)):
        labels[z, 30 - half : 30 + half, 40 - half : 40 + half] = 1
    for z, half in ((6, 4), (7, 9), (8, 5)):
        labels[z, 20 - half : 20 + half, 200 - half : 200 + half] = 4
    labels[3, 50:58, 100:110] = 2
    labels[3, 50:58, 150:160] = 3
    truth = np.zeros_like(labels)
    truth[3, 10:41, 20:51] = 1  # rows 10..40, columns 20..50
    truth[3, 5:25, 120:140] = 2  # a right kidney only in the reference
    truth[5, 5:60, 5:120] = 1
    return image, image.with_array(labels), image.with_array(truth)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def shown(path: Path) -> np.ndarray:
    """The slice area of an overlay PNG (without text bands and margins)."""
    x0, y0, x1, y1 = image_box(path)
    return read(path)[y0:y1, x0:x1]


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.asarray(colour, dtype=np.uint8), axis=-1)


def border(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask)


def test_fill_is_prediction_outline_is_reference_in_the_organs_colour(case, tmp_path) -> None:
    image, labels, truth = case
    paths = render_overlays(image, labels, truth, out_dir=tmp_path, slices=[3])
    assert [p.name for p in paths] == ["slice_004.png", "montage.png"]  # numbered from 1
    pixels = shown(paths[0])
    assert pixels.shape == (H, W, 3)
    outline = border(truth.array[3] == 1) | border(truth.array[3] == 2)
    for label in (1, 2):
        np.testing.assert_array_equal(
            is_colour(pixels, PURE[label]), border(truth.array[3] == label), err_msg=str(label)
        )
    z3 = labels.array[3]
    for label in (1, 2, 3):
        inside = (z3 == label) & ~outline
        assert inside.any(), label
        assert is_colour(pixels, BLENDED_ON_BLACK[label])[inside].all(), label
    assert is_colour(pixels, (0, 0, 0))[(z3 == 0) & ~outline].all()


def test_only_the_scored_organs_are_drawn(case, tmp_path) -> None:
    image, labels, truth = case
    path = render_overlays(image, labels, truth, out_dir=tmp_path, slices=[3], organs=["liver"])[0]
    whole = read(path)
    for label in (2, 3, 4):  # neither in the slice nor in the legend
        assert not is_colour(whole, PURE[label]).any(), label
        assert not is_colour(whole, BLENDED_ON_BLACK[label]).any(), label
    np.testing.assert_array_equal(is_colour(shown(path), PURE[1]), border(truth.array[3] == 1))
    with pytest.raises(ConfigError, match="unknown organ"):
        render_overlays(image, labels, out_dir=tmp_path, organs=["heart"])


def swatches(pixels: np.ndarray, colour: tuple[int, int, int]) -> list[np.ndarray]:
    """The swatches of one colour in a legend band, left to right, each cropped to its box."""
    from scipy import ndimage

    found, _ = ndimage.label(is_colour(pixels, colour), structure=np.ones((3, 3)))
    boxes = sorted(ndimage.find_objects(found), key=lambda b: b[1].start)
    big = [b for b in boxes if b[0].stop - b[0].start >= 8 and b[1].stop - b[1].start >= 8]
    return [is_colour(pixels[box], colour) for box in big]  # (antialiased text is no swatch)


def test_legend_explains_fill_and_outline_and_names_each_drawn_organ(case, tmp_path) -> None:
    image, labels, truth = case
    path = render_overlays(image, labels, truth, out_dir=tmp_path, slices=[7], organs=["spleen"])[0]
    legend = read(path)[image_box(path)[3] :]
    key = swatches(legend, KEY)
    assert len(key) == 2
    assert key[0].all()  # "fill: prediction"
    assert key[1][0].all()
    assert not key[1][4:-4, 4:-4].any()
    assert len(swatches(legend, PURE[4])) == 1  # the spleen's chip, and no other organ's
    assert not any(is_colour(legend, PURE[k]).any() for k in (1, 2, 3))
    without_truth = read(render_overlays(image, labels, out_dir=tmp_path / "p", slices=[7])[0])
    assert len(swatches(without_truth[image_box(path)[3] :], KEY)) == 1  # no reference mark
    both = read(render_overlays(image, labels, truth, out_dir=tmp_path / "b", slices=[3])[0])
    for label in (1, 2, 3, 4):  # organs of the whole case, not just this slice
        assert is_colour(both, PURE[label]).any(), label


def test_text_bands_disclaimer_flags_and_orientation(case, tmp_path) -> None:
    image, labels, truth = case
    plain = render_overlays(image, labels, truth, out_dir=tmp_path / "a", slices=[3])[0]
    flagged = render_overlays(
        image, labels, truth, out_dir=tmp_path / "b", slices=[3], case_id="CT/1",
        flags=["liver 4,500 mL: outside the typical adult range 600-3,500 mL"],
    )[0]  # fmt: skip
    x0, y0, x1, _ = image_box(plain)
    assert image_box(flagged)[1] > y0  # the flag takes header lines
    header = read(flagged)[: image_box(flagged)[1]]
    assert is_colour(header, FLAG_TEXT).sum() > is_colour(read(plain)[:y0], FLAG_TEXT).sum() > 0
    assert DISCLAIMER == "NOT FOR DIAGNOSIS"
    whole = read(plain)
    assert (whole[:, :x0] > 200).any()
    assert (whole[:, x1:] > 200).any()
    assert orientation_letters(Geometry()) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    flipped = Geometry(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert orientation_letters(flipped)["left"] == "L"
    coronal = Geometry(direction=(1, 0, 0, 0, 0, 1, 0, -1, 0))  # rows run head to foot
    assert orientation_letters(coronal) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    placed = Geometry(spacing=(1, 1, 2.5), origin=(0, 0, 10))
    assert slice_position_mm(placed, 3) == pytest.approx(17.5)


def test_auto_slices_hold_organs_and_are_not_neighbours(case, tmp_path) -> None:
    _, labels, truth = case
    chosen = choose_slices(labels.array, truth.array)
    assert {3, 5, 7} <= set(chosen)
    assert len(chosen) <= 6
    occupied = (labels.array > 0).any(axis=(1, 2)) | (truth.array > 0).any(axis=(1, 2))
    assert all(occupied[z] for z in chosen)
    assert min(np.diff(chosen)) >= 2
    assert choose_slices(labels.array, None, max_slices=2) == [3, 7]  # liver's, spleen's
    paths = render_overlays(None, labels, truth, out_dir=tmp_path)
    names = [p.name for p in paths]
    assert names[-1] == "montage.png"
    assert {"slice_004.png", "slice_006.png", "slice_008.png"} <= set(names)
    tiles = [read(p) for p in paths[:-1]]
    montage = read(paths[-1])
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / columns))
    th, tw, _ = tiles[0].shape
    assert montage.shape[:2] == (rows * th + (rows - 1) * 4, columns * tw + (columns - 1) * 4)
    np.testing.assert_array_equal(montage[:th, :tw], tiles[0])  # first tile top-left


def test_auto_slices_without_organs_avoid_the_ends() -> None:
    chosen = choose_slices(np.zeros((40, 4, 4), np.uint8))
    assert chosen[0] > 0
    assert chosen[-1] < 39
    assert len(chosen) == 6
    assert min(np.diff(chosen)) >= 2
    assert choose_slices(np.zeros((3, 4, 4), np.uint8)) == [0, 1, 2]


def test_earlier_pictures_are_replaced_other_files_kept(case, tmp_path) -> None:
    image, labels, _ = case
    (tmp_path / "slice_099.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    render_overlays(image, labels, out_dir=tmp_path, slices=[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "montage.png",
        "notes.txt",
        "slice_004.png",
    ]


def test_anisotropic_pixels_are_shown_square_row_zero_on_top(tmp_path: Path) -> None:
    """64 rows of 1.0 mm x 128 columns of 0.5 mm is 64 mm square: shown square, 256 px wide."""
    geometry = Geometry(spacing=(0.5, 1.0, 2.0))
    image = Volume(np.full((1, 64, 128), 240, np.int16), geometry, Modality.CT)  # white
    labels = np.zeros((1, 64, 128), np.uint8)
    labels[0, :8, :8] = 1  # top-left corner of the stored slice
    png = shown(render_overlays(image, image.with_array(labels), out_dir=tmp_path, slices=[0])[0])
    assert png.shape[:2] == (256, 256)
    liver = ~is_colour(png, (255, 255, 255))
    # rows scale by 4, columns by 2: the 8x8 corner becomes 32 rows x 16 columns at the top left.
    expected = np.zeros((256, 256), bool)
    expected[:32, :16] = True
    np.testing.assert_array_equal(liver, expected)


def test_windows_ct_fixed_mr_percentiles(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(W, dtype=np.float32) * 4.0, (2, H, 1))
    mr = Volume(ramp, modality=Modality.MR_T2SPIR)
    lo, hi = display_window(mr)
    assert (lo, hi) == pytest.approx((np.percentile(ramp, 1), np.percentile(ramp, 99)))
    assert display_window(Volume(ramp, modality=Modality.CT)) == (-160.0, 240.0)
    png = shown(render_overlays(mr, None, out_dir=tmp_path, slices=[0])[0])
    grey = png[0, :, 0].astype(int)
    assert grey[ramp[0, 0] <= lo].max() == 0
    assert grey[ramp[0, 0] >= hi].min() == 255
    assert np.all(np.diff(grey) >= 0)
    path = render_overlays(mr, None, out_dir=tmp_path / "w", slices=[0], window=(0, 100))[0]
    fixed = shown(path)
    assert fixed[0, 25, 0] == 255
    assert fixed[0, 0, 0] == 0


def test_masks_on_black_without_image(case, tmp_path: Path) -> None:
    _, labels, truth = case
    png = shown(render_overlays(None, labels, truth, out_dir=tmp_path, slices=[2])[0])
    liver = labels.array[2] == 1
    assert is_colour(png, BLENDED_ON_BLACK[1])[liver].all()
    assert is_colour(png, (0, 0, 0))[~liver].all()


def test_flags_for_implausible_volumes_and_disagreement() -> None:
    assert volume_flags({"liver": 1500.0, "spleen": 200.0}) == []
    assert volume_flags({"liver": 4500.0}) == [
        "liver 4,500 mL: outside the typical adult range 600-3,500 mL"
    ]
    assert volume_flags({"left_kidney": 0.0}) == ["left kidney: nothing segmented"]
    assert disagreement_flags({"liver": 0.05, "spleen": 0.31}) == [
        "spleen: members disagree (1 - mean pairwise Dice 0.31)"
    ]
    assert len(prediction_flags({"liver": 9000.0}, {"liver": 0.5})) == 2


def test_bad_requests(case, tmp_path: Path) -> None:
    image, labels, _ = case
    with pytest.raises(ConfigError, match=r"\[10\] outside 0..9"):
        render_overlays(image, labels, out_dir=tmp_path, slices=[1, 10])
    with pytest.raises(ConfigError, match="alpha"):
        render_overlays(image, labels, out_dir=tmp_path, alpha=1.5)
    with pytest.raises(DataError, match="labels 9x64x256"):
        render_overlays(image, Volume(labels.array[:9]), out_dir=tmp_path)
    with pytest.raises(ValueError, match="needs an image"):
        render_overlays(None, None, out_dir=tmp_path)
