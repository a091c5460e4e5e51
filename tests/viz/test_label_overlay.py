"""Overlays for any label set: a palette that keeps 16+ labels apart on CT and MR greys, every label
filled and outlined in its colour with a legend naming it, CHAOS output unchanged; volume flags only
where a range is known."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from organseg.errors import ConfigError
from organseg.io.volume import Modality, Volume
from organseg.labels import PALETTE, LabelSet, chaos_label_set
from organseg.synth.abdomen import abdomen_label_set
from organseg.viz import render_overlays, volume_flags
from organseg.viz.overlay import _Bands, image_box

H, W, DEPTH = 64, 256, 6


def cielab(rgb) -> np.ndarray:
    """sRGB (0-255) → CIELAB (D65), the standard formulas."""
    c = np.asarray(rgb, dtype=float) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = (c @ m.T) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def min_distance(colours) -> float:
    labs = [cielab(c) for c in colours]
    return min(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(labs, 2))


def test_palette_keeps_twenty_labels_apart_and_off_grey() -> None:
    assert len(PALETTE) >= 16
    assert PALETTE[:4] == tuple(lb.colour for lb in chaos_label_set())  # CHAOS colours kept
    assert min_distance(PALETTE) >= 35.0  # CIELAB ΔE: clearly different hues, not shades
    for colour in PALETTE:
        lightness, a, b = cielab(colour)
        assert lightness >= 50  # shows on dark MR
        assert np.hypot(a, b) >= 45  # a colour, not a grey: shows on CT soft tissue
    # As drawn: 40 % over the greys of dark MR, CT soft tissue and bright structures.
    for grey in (30, 128, 210):
        blended = [tuple(0.6 * grey + 0.4 * np.asarray(c)) for c in PALETTE]
        assert min_distance(blended) >= 12.0
        assert min(np.hypot(*cielab(c)[1:]) for c in blended) >= 15.0


def abdomen_case() -> tuple[Volume, Volume, Volume]:
    """Nine labels as bars on MR-like noise, the reference shifted by two rows."""
    rng = np.random.default_rng(0)
    image = Volume(
        rng.normal(300, 40, (DEPTH, H, W)).astype(np.float32), modality=Modality.MR_T2SPIR
    )
    labels = np.zeros((DEPTH, H, W), np.uint8)
    for value in range(1, 10):
        labels[2:4, 10:40, 25 * value : 25 * value + 20] = value
    truth = np.roll(labels, 2, axis=1)
    return image, image.with_array(labels), image.with_array(truth)


def test_nine_labels_are_filled_and_outlined_in_their_colours(tmp_path: Path) -> None:
    image, labels, truth = abdomen_case()
    black = image.with_array(np.zeros_like(image.array))
    label_set = abdomen_label_set()
    paths = render_overlays(
        black, labels, truth, out_dir=tmp_path, slices=[2], label_set=label_set, window=(0, 1)
    )
    x0, y0, x1, y1 = image_box(paths[0])
    tile = np.asarray(Image.open(paths[0]).convert("RGB"))
    pixels = tile[y0:y1, x0:x1]
    for label in label_set:
        fill = tuple(round(0.4 * c) for c in label.colour)
        inside = pixels[20, 25 * label.value + 10]
        assert tuple(inside) == fill, label.name
        outline = pixels[12, 25 * label.value + 10]  # the reference's top border row
        assert tuple(outline) == label.colour, label.name
    legend = tile[y1:]
    for label in label_set:  # one chip per label in the legend band
        assert np.all(legend == np.asarray(label.colour, np.uint8), axis=-1).any(), label.name
    assert len({lb.colour for lb in label_set}) == 9


def test_legend_lists_label_names() -> None:
    label_set = abdomen_label_set()
    bands = _Bands(600, [(lb.name, lb.colour) for lb in label_set], True, True, None, [])
    texts = [item[0] for _, _, item in bands.legend]
    assert texts[2:] == [name.replace("_", " ") for name in label_set.names]
    assert texts[-1] == "inferior vena cava"


def test_eighteen_labels_get_eighteen_colours(tmp_path: Path) -> None:
    label_set = LabelSet.from_names([f"structure_{i}" for i in range(1, 19)])
    array = np.zeros((DEPTH, H, W), np.uint8)
    for value in range(1, 19):
        array[3, 5:50, 13 * value : 13 * value + 10] = value
    volume = Volume(array)
    paths = render_overlays(None, volume, out_dir=tmp_path, slices=[3], label_set=label_set)
    x0, y0, x1, y1 = image_box(paths[0])
    pixels = np.asarray(Image.open(paths[0]).convert("RGB"))[y0:y1, x0:x1]
    drawn = {tuple(pixels[20, 13 * v + 5]) for v in range(1, 19)}
    assert len(drawn) == 18
    with pytest.raises(ConfigError, match=r"unknown label\(s\) \['liver'\]"):
        render_overlays(None, volume, out_dir=tmp_path, organs=["liver"], label_set=label_set)


def test_chaos_overlays_are_byte_identical_with_the_chaos_label_set(tmp_path: Path) -> None:
    image, labels, truth = abdomen_case()
    chaos_labels = labels.with_array(np.minimum(labels.array, 4))
    chaos_truth = truth.with_array(np.minimum(truth.array, 4))
    default = render_overlays(image, chaos_labels, chaos_truth, out_dir=tmp_path / "a")
    explicit = render_overlays(
        image, chaos_labels, chaos_truth, out_dir=tmp_path / "b", label_set=chaos_label_set()
    )
    assert [p.name for p in default] == [p.name for p in explicit]
    for a, b in zip(default, explicit, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_volume_flags_only_where_a_range_is_known() -> None:
    flags = volume_flags(
        {"Kidney_R": 10.0, "pancreas": 1.0, "Liver": 9000.0, "aorta": 0.0, "spleen": 200.0}
    )
    assert flags == [
        "Kidney R 10 mL: outside the typical adult range 50-400 mL",
        "Liver 9,000 mL: outside the typical adult range 600-3,500 mL",
    ]
    # The CHAOS names flag exactly as before.
    assert volume_flags({"liver": 0.0, "left_kidney": 500.0}) == [
        "liver: nothing segmented",
        "left kidney 500 mL: outside the typical adult range 50-400 mL",
    ]
