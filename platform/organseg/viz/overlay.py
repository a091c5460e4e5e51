"""Overlay PNGs: translucent organ colours for a prediction, a 1-px green contour for the reference.

Colours are the seed papers' (liver yellow, spleen cyan, right kidney blue, left kidney red; reference
green, from :mod:`organseg.organs`). Slices are drawn as stored (row 0 at the top) and stretched to
square millimetres, so anisotropic pixels do not distort organs. Composition is plain NumPy and the
text is Pillow's: matplotlib would add a second or more per case for figures this simple.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Modality, Volume
from organseg.organs import GROUND_TRUTH_COLOUR, LABEL_NAMES, ORGAN_COLOURS, ORGAN_LABELS

#: Display window for CT in HU (abdominal soft tissue, as in the seed papers' figures).
CT_WINDOW = (-160.0, 240.0)
#: MR has no absolute units: window between these intensity percentiles of the volume.
MR_PERCENTILES = (1.0, 99.0)
MAX_AUTO_SLICES = 6
#: Small images are enlarged (nearest neighbour) to at least this width so the legend stays legible.
MIN_DISPLAY_WIDTH = 256
_LUT_SIZE = 256


def display_window(image: Volume) -> tuple[float, float]:
    """CT: [-160, 240] HU; MR and unknown: the 1st–99th intensity percentiles."""
    if image.modality is Modality.CT:
        return CT_WINDOW
    array = image.array
    step = max(1, int(math.sqrt(array[0].size / 65536)))  # ~64k pixels per slice are plenty
    sample = array[:, ::step, ::step].astype(np.float32, copy=False)
    lo, hi = np.percentile(sample, MR_PERCENTILES)
    return float(lo), (float(hi) if hi > lo else float(lo) + 1.0)


def _per_slice_areas(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Pixel count of every organ present, per slice."""
    flat = labels.reshape(labels.shape[0], -1)
    areas = {k: np.count_nonzero(flat == k, axis=1) for k in sorted(LABEL_NAMES)}
    return {k: counts for k, counts in areas.items() if counts.any()}


def choose_slices(
    labels: np.ndarray | None,
    truth: np.ndarray | None = None,
    depth: int | None = None,
    max_slices: int = MAX_AUTO_SLICES,
) -> list[int]:
    """Informative slices: each organ's largest predicted slice, then its largest reference slice,
    then evenly spaced slices over the organs' extent, at most ``max_slices``, in ascending order."""
    maps = [m for m in (labels, truth) if m is not None]
    if depth is None:
        if not maps:
            raise ValueError("choose_slices needs labels, truth or a depth")
        depth = maps[0].shape[0]
    return _choose([_per_slice_areas(m) for m in maps], depth, max_slices)


def _choose(areas: list[dict[int, np.ndarray]], depth: int, max_slices: int) -> list[int]:
    chosen: list[int] = []
    for per_organ in areas:
        for counts in per_organ.values():
            z = int(np.argmax(counts))
            if z not in chosen and len(chosen) < max_slices:
                chosen.append(z)
    occupied = np.zeros(depth, dtype=bool)
    for per_organ in areas:
        for counts in per_organ.values():
            occupied |= counts > 0
    zs = np.flatnonzero(occupied)
    lo, hi = (int(zs[0]), int(zs[-1])) if zs.size else (0, depth - 1)
    candidates = sorted({round(float(z)) for z in np.linspace(lo, hi, max_slices)})

    def gap(z: int) -> int:
        return min((abs(z - c) for c in chosen), default=depth)

    while len(chosen) < max_slices and candidates:
        # Farthest candidate from those chosen first, so a few slices still span the organs.
        best = max(candidates, key=gap)
        candidates.remove(best)
        if gap(best) > 0:
            chosen.append(best)
    return sorted(chosen)


@functools.lru_cache(maxsize=4)
def _blend_table(alpha: float) -> np.ndarray:
    """``table[label, grey]`` → RGB: grey blended with the organ's colour (a lookup beats float maths
    per pixel by ~10x on 512² slices)."""
    grey = np.arange(256, dtype=np.float32)
    table = np.repeat(np.repeat(grey[None, :, None], 3, axis=2), _LUT_SIZE, axis=0)
    for name, label in ORGAN_LABELS.items():
        colour = np.asarray(ORGAN_COLOURS[name], dtype=np.float32)
        table[label] = grey[:, None] * (1.0 - alpha) + colour[None, :] * alpha
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def _contour(truth: np.ndarray) -> np.ndarray:
    """Inner 1-px border of every organ region (4-connected), so touching organs keep their edge."""
    border = np.zeros(truth.shape, dtype=bool)
    for k in np.unique(truth):
        if k == 0:
            continue
        region = truth == k
        border |= region & ~ndimage.binary_erosion(region)
    return border


def render_slice(
    grey: np.ndarray | None,
    labels: np.ndarray | None,
    truth: np.ndarray | None = None,
    alpha: float = 0.4,
) -> np.ndarray:
    """One RGB slice (uint8, same size as the inputs): grey image, blended organs, green contour.

    ``grey`` is uint8 display intensity (None: black); ``labels`` and ``truth`` hold organ ids.
    """
    shape = next(a.shape for a in (grey, labels, truth) if a is not None)
    grey = np.zeros(shape, np.uint8) if grey is None else grey.astype(np.uint8, copy=False)
    if labels is None:
        out = np.repeat(grey[..., None], 3, axis=-1)
    else:
        out = _blend_table(alpha)[labels.astype(np.uint8, copy=False), grey]
    if truth is not None:
        out[_contour(truth)] = GROUND_TRUTH_COLOUR
    return out


def _to_grey(slice_: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    lo, hi = window
    scaled = (slice_.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _display_indices(shape: tuple[int, int], spacing_xy: tuple[float, float]) -> tuple:
    """Row and column source indices that stretch a slice to square pixels (never shrinking)."""
    rows, cols = shape
    sx, sy = spacing_xy
    unit = min(sx, sy)
    height, width = rows * sy / unit, cols * sx / unit
    scale = max(1.0, MIN_DISPLAY_WIDTH / width)
    height, width = max(rows, round(height * scale)), max(cols, round(width * scale))
    row_idx = np.minimum((np.arange(height) * rows / height).astype(np.intp), rows - 1)
    col_idx = np.minimum((np.arange(width) * cols / width).astype(np.intp), cols - 1)
    return row_idx, col_idx


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _legend_items(
    predicted: list[int], with_truth: bool
) -> list[tuple[str, tuple[int, int, int], bool]]:
    """(text, colour, is_line) for every predicted organ in the volume and the reference contour."""
    items = []
    for label in predicted:
        name = LABEL_NAMES[label]
        items.append((name.replace("_", " "), ORGAN_COLOURS[name], False))
    if with_truth:
        items.append(("reference", GROUND_TRUTH_COLOUR, True))
    return items


class _Legend:
    """A band under the slice: slice number, then colour swatches that wrap to the image width."""

    def __init__(self, width: int, items: list, depth: int) -> None:
        self.items = items
        self.depth = depth
        self.size = max(10, min(16, width // 32))
        self.font = _font(self.size)
        self.line = self.size + 6
        self.layout: list[tuple[int, int, int]] = []  # x, y, item index (-1: the slice text)
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        x, y, pad = 4, 3, 4
        texts = [f"z {depth - 1}/{depth}"] + [t for t, _, _ in items]
        for i, text in enumerate(texts):
            w = int(probe.textlength(text, font=self.font)) + (0 if i == 0 else self.size + 4)
            if x > 4 and x + w > width - pad:
                x, y = 4, y + self.line
            self.layout.append((x, y, i - 1))
            x += w + 3 * pad
        self.height = y + self.line + 2

    def draw(self, draw: ImageDraw.ImageDraw, top: int, z: int) -> None:
        for x, y, i in self.layout:
            y += top
            if i < 0:
                draw.text((x, y), f"z {z}/{self.depth}", fill=(255, 255, 255), font=self.font)
                continue
            text, colour, is_line = self.items[i]
            s = self.size
            if is_line:
                draw.rectangle([x, y + s // 2 - 1, x + s, y + s // 2], fill=colour)
            else:
                draw.rectangle([x, y + 1, x + s, y + s], fill=colour)
            draw.text((x + s + 4, y), text, fill=(255, 255, 255), font=self.font)


def _check_shapes(volumes: dict[str, Volume | None]) -> tuple[int, int, int]:
    shapes = {name: v.shape for name, v in volumes.items() if v is not None}
    if not shapes:
        raise ValueError("render_overlays needs an image, labels or a reference")
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {z}x{y}x{x}" for name, (z, y, x) in shapes.items())
        raise DataError(f"overlay inputs differ in size (slices x rows x columns): {described}")
    return next(iter(shapes.values()))


def render_overlays(
    image: Volume | None,
    labels: Volume | None,
    truth: Volume | None = None,
    *,
    out_dir: Path,
    slices: Literal["auto"] | Sequence[int] = "auto",
    window: tuple[float, float] | None = None,
    alpha: float = 0.4,
) -> list[Path]:
    """Write ``slice_<z>.png`` for the chosen slices and a ``montage.png`` grid of them.

    ``image`` may be None (masks are drawn on black). ``slices="auto"`` picks up to six informative
    slices (:func:`choose_slices`). ``window`` overrides the display window (CT [-160, 240] HU,
    MR 1–99 percentiles). Returns the slice files in ascending z, then the montage.
    """
    depth, _, _ = _check_shapes({"image": image, "labels": labels, "reference": truth})
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must lie in [0, 1], got {alpha}")
    label_array = None if labels is None else np.asarray(labels.array)
    truth_array = None if truth is None else np.asarray(truth.array)
    areas = [_per_slice_areas(a) for a in (label_array, truth_array) if a is not None]
    if isinstance(slices, str):
        if slices != "auto":
            raise ConfigError(f"overlay slices must be 'auto' or slice numbers, got {slices!r}")
        chosen = _choose(areas, depth, MAX_AUTO_SLICES)
    else:
        chosen = sorted({int(z) for z in slices})
        bad = [z for z in chosen if not 0 <= z < depth]
        if bad or not chosen:
            raise ConfigError(f"overlay slices {bad or '[]'} outside 0..{depth - 1}")
    if image is not None and window is None:
        window = display_window(image)
    placed = next(v for v in (image, labels, truth) if v is not None)
    row_idx, col_idx = _display_indices(placed.shape[1:], placed.spacing[:2])
    grid = np.ix_(row_idx, col_idx)
    predicted = sorted(areas[0]) if label_array is not None else []
    legend = _Legend(len(col_idx), _legend_items(predicted, truth_array is not None), depth)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(depth - 1)))
    tiles, paths = [], []
    for z in chosen:
        grey = None if image is None else _to_grey(image.array[z][grid], window)  # type: ignore[arg-type]
        rgb = render_slice(
            grey,
            None if label_array is None else label_array[z][grid],
            None if truth_array is None else truth_array[z][grid],
            alpha,
        )
        tile = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + legend.height))
        tile.paste(Image.fromarray(rgb), (0, 0))
        legend.draw(ImageDraw.Draw(tile), rgb.shape[0], z)
        path = out_dir / f"slice_{z:0{digits}d}.png"
        tile.save(path, compress_level=1)
        tiles.append(tile)
        paths.append(path)
    paths.append(_montage(tiles, out_dir / "montage.png"))
    return paths


def _montage(tiles: list[Image.Image], path: Path, gap: int = 4) -> Path:
    """The tiles in a near-square grid, row by row, on a dark background."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (columns * w + (columns - 1) * gap, rows * h + (rows - 1) * gap))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet.paste(tile, (c * (w + gap), r * (h + gap)))
    sheet.save(path, compress_level=1)
    return path
