"""Overlay PNGs a clinician can read: the prediction as a translucent fill, the reference as an outline.

Each label has one bright colour (its :class:`organseg.labels.LabelSet` colour; the CHAOS organs keep
:data:`organseg.organs.ORGAN_COLOURS`) used for both its predicted fill and its reference outline,
and the legend names every label drawn; only the labels asked for (the scored ones) are drawn, so a
kidney in an MR reference never looks like missed liver. Every tile carries the case id, the slice number
counted from 1 with its position in mm, orientation letters at the edges (L/R, A/P from the volume's
direction), a legend saying which mark is prediction and which reference, "not for diagnosis", and
the flags the caller hands in (implausible volumes, member disagreement).

Slices are drawn as stored (row 0 at the top) and stretched to square millimetres. Composition is
plain NumPy and the text Pillow's: matplotlib would add a second or more per case for figures this
simple.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from scipy import ndimage

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.labels import RGB, LabelSet, chaos_label_set

#: Display window for CT in HU (abdominal soft tissue, as in the seed papers' figures).
CT_WINDOW = (-160.0, 240.0)
#: MR has no absolute units: window between these intensity percentiles of the volume.
MR_PERCENTILES = (1.0, 99.0)
MAX_AUTO_SLICES = 6
#: Small images are enlarged (nearest neighbour) to at least this width so the text stays legible.
MIN_DISPLAY_WIDTH = 256
#: Chosen slices are at least this far apart (more on long organs: an eighth of the extent divided
#: by the slice count), so no two tiles show neighbouring slices.
MIN_SLICE_GAP = 2
#: Beyond each organ's largest slice, slices are picked where some organ shows at least this share
#: of its largest cross-section (so no tile shows only the tip of an organ).
SUBSTANTIAL = 0.25
DISCLAIMER = "NOT FOR DIAGNOSIS"
_LUT_SIZE = 256
_TEXT = (255, 255, 255)
_FLAG = (255, 170, 60)
_KEY = (170, 170, 170)  # legend marks that explain fill and outline, in no organ's colour
#: Anatomical letter of each world direction in LPS (DICOM/ITK patient coordinates).
_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))


def display_window(image: Volume) -> tuple[float, float]:
    """CT: [-160, 240] HU; MR and unknown: the 1st–99th intensity percentiles."""
    if image.modality is Modality.CT:
        return CT_WINDOW
    array = image.array
    step = max(1, int(math.sqrt(array[0].size / 65536)))  # ~64k pixels per slice are plenty
    sample = array[:, ::step, ::step].astype(np.float32, copy=False)
    lo, hi = np.percentile(sample, MR_PERCENTILES)
    return float(lo), (float(hi) if hi > lo else float(lo) + 1.0)


def _only(labels: np.ndarray | None, ids: Sequence[int]) -> np.ndarray | None:
    """``labels`` with every organ not in ``ids`` cleared (what is not scored is not drawn)."""
    if labels is None:
        return None
    keep = np.zeros(_LUT_SIZE, dtype=np.uint8)
    keep[list(ids)] = list(ids)
    return keep[labels.astype(np.uint8, copy=False)]


def _colours(label_set: LabelSet | None) -> dict[int, RGB]:
    """Label value → display colour (the CHAOS organs by default); values must fit the 8-bit tables."""
    label_set = label_set or chaos_label_set()
    too_high = [lb.name for lb in label_set if not 0 < lb.value < _LUT_SIZE]
    if too_high:
        raise ConfigError(f"overlays draw label values 1-{_LUT_SIZE - 1}; {too_high} lie outside")
    return {lb.value: lb.colour for lb in label_set}


def _per_slice_areas(
    labels: np.ndarray, values: Sequence[int] | None = None
) -> dict[int, np.ndarray]:
    """Pixel count of every label present (``values``, default the CHAOS organs), per slice."""
    flat = labels.reshape(labels.shape[0], -1)
    values = sorted(_colours(None)) if values is None else sorted(values)
    areas = {k: np.count_nonzero(flat == k, axis=1) for k in values}
    return {k: counts for k, counts in areas.items() if counts.any()}


def choose_slices(
    labels: np.ndarray | None,
    truth: np.ndarray | None = None,
    depth: int | None = None,
    max_slices: int = MAX_AUTO_SLICES,
    label_set: LabelSet | None = None,
) -> list[int]:
    """Informative slices (0-based): each organ's largest predicted and reference slice, then slices
    spread over where the organs are substantial (:data:`SUBSTANTIAL`), at least
    :data:`MIN_SLICE_GAP` apart; without any organ, slices spread over the middle of the volume.
    Ascending."""
    maps = [m for m in (labels, truth) if m is not None]
    if depth is None:
        if not maps:
            raise ValueError("choose_slices needs labels, truth or a depth")
        depth = maps[0].shape[0]
    values = sorted(_colours(label_set))
    return _choose([_per_slice_areas(m, values) for m in maps], depth, max_slices)


def _choose(areas: list[dict[int, np.ndarray]], depth: int, max_slices: int) -> list[int]:
    occupied = np.zeros(depth, dtype=bool)
    for per_organ in areas:
        for counts in per_organ.values():
            occupied |= counts > 0
    zs = [int(z) for z in np.flatnonzero(occupied)]
    if not zs:  # nothing drawn anywhere: the middle of the volume, not its first slices
        lo, hi = round(0.2 * (depth - 1)), round(0.8 * (depth - 1))
        return sorted({round(float(z)) for z in np.linspace(lo, hi, min(max_slices, depth))})
    chosen: list[int] = []
    min_gap = max(MIN_SLICE_GAP, (zs[-1] - zs[0] + 1) // (2 * max_slices))

    def gap(z: int) -> int:
        return min((abs(z - c) for c in chosen), default=depth)

    for per_organ in areas:
        for counts in per_organ.values():
            z = int(np.argmax(counts))
            if len(chosen) < max_slices and gap(z) >= min_gap:
                chosen.append(z)
    # Spread the rest over slices where the organs are substantial, not over their tips.
    total = np.zeros(depth)
    for per_organ in areas:
        for counts in per_organ.values():
            total = np.maximum(total, counts / max(int(counts.max()), 1))
    candidates = [z for z in zs if total[z] >= SUBSTANTIAL]
    trim = max(1, len(candidates) // 10) if len(candidates) >= 5 else 0
    candidates = candidates[trim : len(candidates) - trim]  # the outermost slices show least
    while len(chosen) < max_slices and candidates:
        # Farthest occupied slice from those chosen first, so a few slices still span the organs.
        best = max(candidates, key=gap)
        candidates.remove(best)
        if gap(best) >= min_gap:
            chosen.append(best)
    return sorted(chosen)


@functools.lru_cache(maxsize=8)
def _blend_table(alpha: float, colours: tuple[tuple[int, RGB], ...] | None = None) -> np.ndarray:
    """``table[label, grey]`` → RGB: grey blended with the label's colour (a lookup beats float maths
    per pixel by ~10x on 512² slices). ``colours``: ``(value, rgb)`` pairs, default the CHAOS organs."""
    grey = np.arange(256, dtype=np.float32)
    table = np.repeat(np.repeat(grey[None, :, None], 3, axis=2), _LUT_SIZE, axis=0)
    for label, rgb in colours or tuple(_colours(None).items()):
        colour = np.asarray(rgb, dtype=np.float32)
        table[label] = grey[:, None] * (1.0 - alpha) + colour[None, :] * alpha
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def _contour(truth: np.ndarray, width: int = 1) -> dict[int, np.ndarray]:
    """Inner border (``width`` px, 4-connected erosion) of every organ region, per organ id."""
    borders = {}
    for k in np.unique(truth):
        if k == 0:
            continue
        region = truth == k
        borders[int(k)] = region & ~ndimage.binary_erosion(region, iterations=width)
    return borders


def render_slice(
    grey: np.ndarray | None,
    labels: np.ndarray | None,
    truth: np.ndarray | None = None,
    alpha: float = 0.4,
    outline: int = 1,
    label_set: LabelSet | None = None,
) -> np.ndarray:
    """One RGB slice (uint8, same size as the inputs): grey image, labels blended in their colour
    (prediction), each reference label's border in the same colour at full strength.

    ``grey`` is uint8 display intensity (None: black); ``labels`` and ``truth`` hold label values
    of ``label_set`` (default: CHAOS organ ids).
    """
    colours = _colours(label_set)
    shape = next(a.shape for a in (grey, labels, truth) if a is not None)
    grey = np.zeros(shape, np.uint8) if grey is None else grey.astype(np.uint8, copy=False)
    if labels is None:
        out = np.repeat(grey[..., None], 3, axis=-1)
    else:
        table = _blend_table(alpha, None if label_set is None else tuple(colours.items()))
        out = table[labels.astype(np.uint8, copy=False), grey]
    if truth is not None:
        for k, border in _contour(truth, outline).items():
            out[border] = colours[k]
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


def orientation_letters(geometry: Geometry) -> dict[str, str]:
    """Patient direction at each image edge (``left``, ``right``, ``top``, ``bottom``) from the
    volume's direction matrix, in DICOM's LPS convention; an axis that runs obliquely gets the
    letters of its dominant component."""
    matrix = geometry.direction_matrix

    def letter(vector: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return _LPS_LETTERS[axis][int(vector[axis] > 0)]

    column, row = matrix[:, 0], matrix[:, 1]  # index x runs along columns, y down the rows
    return {
        "left": letter(-column),
        "right": letter(column),
        "top": letter(-row),
        "bottom": letter(row),
    }


def slice_position_mm(geometry: Geometry, z: int) -> float:
    """Position of slice ``z`` along the slice normal (mm), as viewers show a slice location."""
    matrix = geometry.direction_matrix
    normal = np.cross(matrix[:, 0], matrix[:, 1])
    centre = np.asarray(geometry.origin) + matrix[:, 2] * geometry.spacing[2] * z
    return float(np.dot(centre, normal))


def _wrap(parts: list[tuple[str, tuple[int, int, int], str]], width: int, font, size: int) -> list:
    """Lay out ``(text, colour, mark)`` items left to right, wrapping at ``width``; mark is
    ``fill``, ``outline`` or ``""``. Returns ``(x, row, item)``."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    placed, x, row = [], 4, 0
    for text, colour, mark in parts:
        w = int(probe.textlength(text, font=font)) + (size + 4 if mark else 0)
        if x > 4 and x + w > width - 4:
            x, row = 4, row + 1
        placed.append((x, row, (text, colour, mark)))
        x += w + size
    return placed


class _Bands:
    """Text above and below a slice: a header (case, slice, position, disclaimer, flags) and a legend."""

    def __init__(
        self,
        width: int,
        organs: list[tuple[str, RGB]],
        with_prediction: bool,
        with_truth: bool,
        case_id: str | None,
        flags: Sequence[str],
    ) -> None:
        self.width, self.case_id = width, case_id
        self.size = max(11, min(16, width // 30))
        self.font = _font(self.size)
        self.line = self.size + 6
        probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self.flag_lines: list[str] = []
        for flag in flags:  # one flag per line, wrapped at words
            line = ""
            for word in f"! {flag}".split():
                trial = f"{line} {word}" if line else word
                if line.strip() and probe.textlength(trial, font=self.font) > width - 8:
                    self.flag_lines.append(line)
                    line = "    " + word  # continuation lines are indented under the flag
                else:
                    line = trial
            self.flag_lines.append(line)
        widest = max(
            probe.textlength(t, font=self.font)
            for t in ("slice 999 of 999", f"{case_id or ''}   slice 999 of 999")
        )
        self.disclaimer_line = (
            4 + widest + self.size + probe.textlength(DISCLAIMER, font=self.font) > width - 4
            and 4
            + probe.textlength("position -1234.5 mm", font=self.font)
            + self.size
            + probe.textlength(DISCLAIMER, font=self.font)
            > width - 4
        )
        lines = 2 + int(self.disclaimer_line) + len(self.flag_lines)
        self.header_height = self.line * lines + 4
        # What the two marks mean (in neutral grey), then one colour chip per drawn label.
        items = []
        if with_prediction:
            items.append(("fill: prediction", _KEY, "fill"))
        if with_truth:
            items.append(("outline: reference", _KEY, "outline"))
        items += [(name.replace("_", " "), colour, "fill") for name, colour in organs]
        self.legend = _wrap(items, width, self.font, self.size)
        rows = 1 + max((row for _, row, _ in self.legend), default=-1)
        self.legend_height = self.line * rows + 6 if rows else 0

    def draw_header(self, draw: ImageDraw.ImageDraw, title: str, position: str) -> None:
        """Case and slice, position, the disclaimer (right-aligned where it fits), then the flags."""
        f, right = self.font, self.width - 4
        draw.text((4, 3), title, fill=_TEXT, font=f)
        draw.text((4, 3 + self.line), position, fill=_TEXT, font=f)
        disclaimer_w = int(draw.textlength(DISCLAIMER, font=f))
        for row, text in enumerate((title, position)):
            if 4 + draw.textlength(text, font=f) + self.size + disclaimer_w <= right:
                draw.text(
                    (right - disclaimer_w, 3 + row * self.line), DISCLAIMER, fill=_FLAG, font=f
                )
                break
        else:  # narrow tile: the disclaimer gets the line the flags would start on
            draw.text((4, 3 + 2 * self.line), DISCLAIMER, fill=_FLAG, font=f)
        first = 2 + int(self.disclaimer_line)
        for i, line in enumerate(self.flag_lines):
            draw.text((4, 3 + self.line * (first + i)), line, fill=_FLAG, font=f)

    def draw_legend(self, draw: ImageDraw.ImageDraw, top: int, left: int = 0) -> None:
        s = self.size
        for x, row, (text, colour, mark) in self.legend:
            x += left
            y = top + 3 + row * self.line
            if mark == "fill":
                draw.rectangle([x, y + 1, x + s, y + s], fill=colour)
            elif mark == "outline":
                draw.rectangle([x, y + 1, x + s, y + s], outline=colour, width=2)
            draw.text((x + s + 4, y), text, fill=_TEXT, font=self.font)


def _draw_orientation(
    draw: ImageDraw.ImageDraw, letters: dict[str, str], box: tuple[int, int, int, int], font
) -> None:
    """Orientation letters in the margins around the image ``box`` (x0, y0, x1, y1), never over it."""
    x0, y0, x1, y1 = box
    ascent = font.getbbox("L")[3] if hasattr(font, "getbbox") else 10
    for edge, text in letters.items():
        tw = int(draw.textlength(text, font=font))
        x, y = {
            "left": ((x0 - tw) // 2, (y0 + y1 - ascent) // 2),
            "right": (x1 + (x0 - tw) // 2, (y0 + y1 - ascent) // 2),
            "top": ((x0 + x1 - tw) // 2, y0 - ascent - 3),
            "bottom": ((x0 + x1 - tw) // 2, y1 + 2),
        }[edge]
        draw.text((x, y), text, fill=_TEXT, font=font)


def _check_shapes(volumes: dict[str, Volume | None]) -> tuple[int, int, int]:
    shapes = {name: v.shape for name, v in volumes.items() if v is not None}
    if not shapes:
        raise ValueError("render_overlays needs an image, labels or a reference")
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {z}x{y}x{x}" for name, (z, y, x) in shapes.items())
        raise DataError(f"overlay inputs differ in size (slices x rows x columns): {described}")
    return next(iter(shapes.values()))


def _organs_to_draw(
    organs: Sequence[str] | None, arrays: list[np.ndarray | None], label_set: LabelSet
) -> list[str]:
    names = list(label_set.names)
    if organs is not None:
        unknown = [o for o in organs if o not in names]
        if unknown:
            what = "organ(s)" if label_set.name == "chaos" else "label(s)"
            raise ConfigError(f"unknown {what} {unknown}; valid {what[:-3]}s are {names}")
        return [o for o in names if o in organs]
    present = {int(v) for a in arrays if a is not None for v in np.unique(a) if v}
    return [lb.name for lb in label_set if lb.value in present]


def slice_file_name(z: int, depth: int) -> str:
    """``slice_<n>.png`` with ``n`` counted from 1, as the tile's caption counts."""
    return f"slice_{z + 1:0{max(3, len(str(depth)))}d}.png"


def render_overlays(
    image: Volume | None,
    labels: Volume | None,
    truth: Volume | None = None,
    *,
    out_dir: Path,
    organs: Sequence[str] | None = None,
    case_id: str | None = None,
    flags: Sequence[str] = (),
    slices: Literal["auto"] | Sequence[int] = "auto",
    window: tuple[float, float] | None = None,
    alpha: float = 0.4,
    label_set: LabelSet | None = None,
) -> list[Path]:
    """Write ``slice_<n>.png`` for the chosen slices (``n`` from 1) and a ``montage.png`` grid of them.

    ``image`` may be None (masks are drawn on black). ``organs`` limits what is drawn (default: every
    organ in the prediction or reference); pass the scored organs. ``slices`` is ``"auto"`` (up to six
    slices holding those organs, :func:`choose_slices`) or 0-based indices. ``window`` overrides the
    display window (CT [-160, 240] HU, MR 1–99 percentiles). Earlier slice files and montage in
    ``out_dir`` are removed first, so the folder shows one run. ``label_set`` gives the labels'
    values, names and colours (default: the CHAOS organs; ``organs`` then names its labels). Returns
    the slice files in ascending order, then the montage.
    """
    depth, _, _ = _check_shapes({"image": image, "labels": labels, "reference": truth})
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must lie in [0, 1], got {alpha}")
    raw = [None if v is None else np.asarray(v.array) for v in (labels, truth)]
    labels_known = label_set or chaos_label_set()
    colours = _colours(labels_known)
    drawn = _organs_to_draw(organs, raw, labels_known)
    ids = [labels_known[o].value for o in drawn]
    label_array, truth_array = (_only(a, ids) for a in raw)
    areas = [
        _per_slice_areas(a, sorted(colours)) for a in (label_array, truth_array) if a is not None
    ]
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
    width, height = len(col_idx), len(row_idx)
    legend = [(name, colours[labels_known[name].value]) for name in drawn]
    bands = _Bands(width, legend, labels is not None, truth is not None, case_id, flags)
    letters = orientation_letters(placed.geometry)
    outline = max(1, round(width / 300))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("slice_*.png"), out_dir / "montage.png"]:
        old.unlink(missing_ok=True)
    margin = bands.size + 8  # room for the orientation letters around the image
    x0, y0 = margin, bands.header_height + bands.line
    box = (x0, y0, x0 + width, y0 + height)
    tile_size = (width + 2 * margin, y0 + height + bands.line + bands.legend_height)
    info = PngImagePlugin.PngInfo()
    info.add_text("organseg:image-box", ",".join(map(str, box)))
    tiles, paths = [], []
    for z in chosen:
        grey = None if image is None else _to_grey(image.array[z][grid], window)  # type: ignore[arg-type]
        rgb = render_slice(
            grey,
            None if label_array is None else label_array[z][grid],
            None if truth_array is None else truth_array[z][grid],
            alpha,
            outline,
            label_set,
        )
        tile = Image.new("RGB", tile_size)
        tile.paste(Image.fromarray(rgb), (x0, y0))
        draw = ImageDraw.Draw(tile)
        title = f"{case_id}   " if case_id else ""
        bands.draw_header(
            draw,
            f"{title}slice {z + 1} of {depth}",
            f"position {slice_position_mm(placed.geometry, z):.1f} mm",
        )
        _draw_orientation(draw, letters, box, bands.font)
        bands.draw_legend(draw, box[3] + bands.line, x0)
        path = out_dir / slice_file_name(z, depth)
        tile.save(path, compress_level=1, pnginfo=info)
        tiles.append(tile)
        paths.append(path)
    paths.append(_montage(tiles, out_dir / "montage.png"))
    return paths


def image_box(path: Path | str) -> tuple[int, int, int, int]:
    """Where the slice itself lies in an overlay PNG (x0, y0, x1, y1), from the PNG's text chunk."""
    with Image.open(path) as png:
        return tuple(int(v) for v in png.text["organseg:image-box"].split(","))  # type: ignore[return-value]


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
