"""Overlay PNGs: organ colours where organs are, green reference borders, slice choice, aspect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.viz import choose_slices, display_window, render_overlays

H, W, DEPTH = 64, 256, 10  # 256 columns: shown at scale 1, so PNG pixels are array pixels
GREEN = (0, 255, 0)
#: 40 % of each pure organ colour over a black (air) background: round(0.4 * 255) = 102.
BLENDED_ON_BLACK = {1: (102, 102, 0), 2: (0, 0, 102), 3: (102, 0, 0), 4: (0, 102, 102)}
PURE = {1: (255, 255, 0), 2: (0, 0, 255), 3: (255, 0, 0), 4: (0, 255, 255)}


@pytest.fixture
def case() -> tuple[Volume, Volume, Volume]:
    """CT of air (-1000 HU, black) with four organs; liver largest at z=3, spleen at z=7, the
    reference liver largest at z=5."""
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
    truth[5, 5:60, 5:120] = 1
    return image, image.with_array(labels), image.with_array(truth)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.asarray(colour, dtype=np.uint8), axis=-1)


def test_organ_colours_and_reference_contour(case, tmp_path: Path) -> None:
    image, labels, truth = case
    paths = render_overlays(image, labels, truth, out_dir=tmp_path, slices=[3])
    assert [p.name for p in paths] == ["slice_003.png", "montage.png"]
    png = read(paths[0])
    assert png.shape[1] == W
    assert png.shape[0] > H
    shown = png[:H]
    green = is_colour(shown, GREEN)
    # The reference rectangle's 1-px border, computed here by hand.
    expected = np.zeros((H, W), bool)
    expected[10, 20:51] = expected[40, 20:51] = True
    expected[10:41, 20] = expected[10:41, 50] = True
    np.testing.assert_array_equal(green, expected)
    z3 = labels.array[3]
    for label, colour in BLENDED_ON_BLACK.items():
        if label == 4:
            continue  # no spleen on slice 3
        inside = (z3 == label) & ~expected
        assert inside.any()
        assert is_colour(shown, colour)[inside].all(), label
    background = (z3 == 0) & ~expected
    assert is_colour(shown, (0, 0, 0))[background].all()


def test_legend_shows_predicted_organs_and_reference(case, tmp_path: Path) -> None:
    image, labels, truth = case
    legend = read(render_overlays(image, labels, truth, out_dir=tmp_path, slices=[7])[0])[H:]
    for label in (1, 2, 3, 4):  # organs of the whole prediction, not just this slice
        assert is_colour(legend, PURE[label]).any(), label
    assert is_colour(legend, GREEN).any()
    without_truth = read(render_overlays(image, labels, out_dir=tmp_path / "p", slices=[7])[0])
    assert not is_colour(without_truth, GREEN).any()


def test_auto_slices_include_each_largest_organ_slice(case, tmp_path: Path) -> None:
    _, labels, truth = case
    chosen = choose_slices(labels.array, truth.array)
    assert {3, 5, 7} <= set(chosen)
    assert len(chosen) <= 6
    assert chosen == sorted(set(chosen))
    assert choose_slices(labels.array, None, max_slices=2) == [3, 7]  # liver's, spleen's
    paths = render_overlays(None, labels, truth, out_dir=tmp_path)
    names = [p.name for p in paths]
    assert names[-1] == "montage.png"
    assert {"slice_003.png", "slice_005.png", "slice_007.png"} <= set(names)
    tiles = [read(p) for p in paths[:-1]]
    montage = read(paths[-1])
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / columns))
    th, tw, _ = tiles[0].shape
    assert montage.shape[:2] == (rows * th + (rows - 1) * 4, columns * tw + (columns - 1) * 4)
    np.testing.assert_array_equal(montage[:th, :tw], tiles[0])  # first tile top-left


def test_auto_slices_without_organs_span_the_volume() -> None:
    chosen = choose_slices(np.zeros((40, 4, 4), np.uint8))
    assert chosen[0] == 0
    assert chosen[-1] == 39
    assert len(chosen) == 6
    assert choose_slices(np.zeros((3, 4, 4), np.uint8)) == [0, 1, 2]


def test_anisotropic_pixels_are_shown_square_row_zero_on_top(tmp_path: Path) -> None:
    """64 rows of 1.0 mm x 128 columns of 0.5 mm is 64 mm square: shown square, 256 px wide."""
    geometry = Geometry(spacing=(0.5, 1.0, 2.0))
    image = Volume(np.full((1, 64, 128), 240, np.int16), geometry, Modality.CT)  # white
    labels = np.zeros((1, 64, 128), np.uint8)
    labels[0, :8, :8] = 1  # top-left corner of the stored slice
    png = read(render_overlays(image, image.with_array(labels), out_dir=tmp_path, slices=[0])[0])
    white_rows = int(np.argmin(is_colour(png[:, -1], (255, 255, 255))))
    assert (white_rows, png.shape[1]) == (256, 256)
    liver = ~is_colour(png[:256], (255, 255, 255))
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
    png = read(render_overlays(mr, None, out_dir=tmp_path, slices=[0])[0])[:H]
    grey = png[0, :, 0].astype(int)
    assert grey[ramp[0, 0] <= lo].max() == 0
    assert grey[ramp[0, 0] >= hi].min() == 255
    assert np.all(np.diff(grey) >= 0)
    fixed = read(render_overlays(mr, None, out_dir=tmp_path / "w", slices=[0], window=(0, 100))[0])
    assert fixed[0, 25, 0] == 255
    assert fixed[0, 0, 0] == 0


def test_masks_on_black_without_image(case, tmp_path: Path) -> None:
    _, labels, truth = case
    png = read(render_overlays(None, labels, truth, out_dir=tmp_path, slices=[2])[0])[:H]
    liver = labels.array[2] == 1
    assert is_colour(png, BLENDED_ON_BLACK[1])[liver].all()
    assert is_colour(png, (0, 0, 0))[~liver].all()


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
