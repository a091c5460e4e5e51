"""Synthetic abdominal phantoms: a 3D tissue map with CHAOS organ labels, rendered as CT or MR.

Anatomy is drawn per case from a seed (body habitus, fat thickness, organ sizes, positions,
rotations, smooth random deformations) and laid out in normalised coordinates, so the same seed
gives the same patient at any matrix size. Images are rendered from the tissue map through
per-tissue intensity tables with texture, a smooth bias field, partial-volume blur and noise; the
labels come from the very same voxels, so masks and images are aligned by construction.

Array conventions follow SimpleITK's NumPy view: ``[z, y, x]`` = ``[slice, row, column]``. Slice 0 is
the most cranial (head) slice, rows run anterior → posterior and columns run from the patient's
right to left, so the liver sits at low column indices (image left, radiological convention).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from scipy import ndimage

from organseg.organs import ORGAN_LABELS

LIVER = ORGAN_LABELS["liver"]
RIGHT_KIDNEY = ORGAN_LABELS["right_kidney"]
LEFT_KIDNEY = ORGAN_LABELS["left_kidney"]
SPLEEN = ORGAN_LABELS["spleen"]


class Tissue(IntEnum):
    """Tissue classes of the phantom; each sequence maps them to intensities."""

    AIR = 0
    FAT = 1  # subcutaneous fat
    MUSCLE = 2
    VISCERAL_FAT = 3
    BOWEL = 4  # bowel wall
    GAS = 5
    LUNG = 6
    CORTICAL_BONE = 7
    MARROW = 8
    DISC = 9
    CSF = 10
    AORTA = 11
    IVC = 12
    LIVER = 13
    LIVER_VESSEL = 14
    FLUID = 15  # gallbladder, renal pelvis, stomach content
    SPLEEN = 16
    KIDNEY_CORTEX = 17
    KIDNEY_MEDULLA = 18
    STOMACH_WALL = 19
    TABLE = 20
    TABLE_FOAM = 21
    BOWEL_CONTENT = 22


N_TISSUES = len(Tissue)


def named_rng(seed: int, name: str) -> np.random.Generator:
    """An independent, reproducible random stream per (seed, purpose).

    Separate streams keep, e.g., the anatomy identical whether or not another series of the same
    case is rendered first. ``zlib.crc32`` is used because Python's ``hash`` is salted per process.
    """
    entropy = [int(seed) % 2**64, zlib.crc32(name.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


# -- smooth random fields ---------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _basis(n: int, nodes: int) -> np.ndarray:
    """Gaussian radial basis on ``n`` samples with ``nodes`` centres; rows have unit norm.

    Smooth fields are built as a separable product of these small matrices with a coarse random
    coefficient grid: much cheaper than ``ndimage.zoom`` of a coarse grid at large sizes, and
    independent of the matrix size (the same coefficients give the same shape at 64² or 512²).
    """
    t = (np.arange(n) + 0.5) / n
    centres = np.linspace(-0.2, 1.2, nodes)
    width = centres[1] - centres[0]
    b = np.exp(-0.5 * ((t[:, None] - centres[None, :]) / width) ** 2)
    b = (b / np.sqrt((b**2).sum(axis=1, keepdims=True))).astype(np.float32)
    b.flags.writeable = False
    return b


Box = tuple[slice, slice, slice]


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    nodes: tuple[int, int, int] = (4, 6, 6),
    box: Box | None = None,
) -> np.ndarray:
    """A smooth random field of unit variance over a ``(z, y, x)`` grid (float32).

    With ``box`` only that part of the grid is evaluated; its values equal the same part of the
    full field, so organs can be computed in their bounding boxes.
    """
    coef = rng.standard_normal(nodes).astype(np.float32)
    bz, by, bx = (_basis(s, k) for s, k in zip(shape, nodes, strict=True))
    if box is not None:
        bz, by, bx = bz[box[0]], by[box[1]], bx[box[2]]
    out = np.tensordot(bz, coef, axes=(1, 0))  # (Z, ny, nx)
    out = np.tensordot(out, by, axes=(1, 1))  # (Z, nx, Y)
    return np.tensordot(out, bx, axes=(1, 1))  # (Z, Y, X)


def texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Fine-grained correlated noise with unit standard deviation (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sig = (min(sigma * 0.5, 1.0), sigma, sigma) if len(shape) == 3 else sigma
    out = ndimage.gaussian_filter(noise, sig, mode="reflect")
    std = float(out.std())
    return out / std if std > 0 else out


# -- anatomy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Organ:
    """An ellipsoid in body-relative coordinates, rotated in-plane, with a surface perturbation."""

    centre: tuple[float, float, float]  # (x', y', z): x', y' in body units (-1..1), z in 0..1
    axes: tuple[float, float, float]  # semi-axes: x, y in body-scale units, z in slab units
    angle: float  # in-plane rotation (radians)
    bump: float  # amplitude of the random surface perturbation


@dataclass(frozen=True)
class Anatomy:
    """Per-case random anatomy. All geometry is normalised: x, y in [-1, 1], z in [0, 1] (head→feet)."""

    seed: int
    body_centre: tuple[float, float]
    body_axes: tuple[float, float]  # semi-axes of the body outline (x, y), image-normalised
    body_power: float  # superellipse exponent (2 = ellipse; larger = boxier)
    widening: float  # relative change of body width from top to bottom slice
    fat: float  # subcutaneous fat thickness (fraction of the body radius)
    muscle: float  # abdominal wall muscle thickness (fraction of the body radius)
    visceral_fat: float  # 0..1, how much of the free cavity is fat rather than bowel
    warp: float  # amplitude of the global smooth deformation (normalised units)
    dome: float  # z of the diaphragm dome centre
    spine_y: float  # vertebral body centre (body y')
    disc_period: float  # vertebral level height in slab units
    disc_phase: float
    liver_lobes: tuple[Organ, Organ, Organ]
    gallbladder: Organ
    spleen: Organ
    kidneys: tuple[Organ, Organ]  # (right, left)
    stomach: Organ
    fill_level: float  # stomach air/fluid level (fraction of the stomach height from anterior)
    vessel_density: float  # liver vessel tube thickness

    @property
    def scale(self) -> float:
        """Overall body size relative to an average patient; organ sizes scale with it."""
        return float(np.sqrt(self.body_axes[0] * self.body_axes[1]) / 0.72)


def sample_anatomy(seed: int, fov_fill: float = 1.0) -> Anatomy:
    """Draw a random patient. ``fov_fill`` shrinks the body for wider fields of view (MR)."""
    rng = named_rng(seed, "anatomy")

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    ax = u(0.80, 0.92) * fov_fill
    ay = ax * u(0.66, 0.80)
    liver_scale = u(0.88, 1.12)
    right_lobe = Organ(
        centre=(u(-0.48, -0.38), u(-0.10, 0.04), u(0.30, 0.36)),
        axes=(0.50 * liver_scale, 0.72 * liver_scale, u(0.36, 0.44)),
        angle=u(-0.25, 0.15),
        bump=u(0.15, 0.30),
    )
    left_lobe = Organ(
        centre=(u(-0.04, 0.12), u(-0.52, -0.38), u(0.24, 0.30)),
        axes=(u(0.34, 0.48) * liver_scale, 0.24 * liver_scale, u(0.18, 0.24)),
        angle=u(-0.45, -0.15),
        bump=u(0.15, 0.30),
    )
    caudate = Organ(
        centre=(u(-0.16, -0.08), u(0.05, 0.15), u(0.30, 0.38)),
        axes=(0.14, 0.20, 0.14),
        angle=0.0,
        bump=0.1,
    )
    gallbladder = Organ(
        centre=(u(-0.34, -0.22), u(-0.42, -0.28), u(0.50, 0.58)),
        axes=(u(0.05, 0.08), u(0.10, 0.16), u(0.07, 0.11)),
        angle=u(-0.8, -0.3),
        bump=0.08,
    )
    spleen_scale = u(0.8, 1.25)
    spleen = Organ(
        centre=(u(0.50, 0.60), u(0.15, 0.30), u(0.26, 0.36)),
        axes=(0.15 * spleen_scale, 0.38 * spleen_scale, u(0.16, 0.22) * spleen_scale),
        angle=u(-0.85, -0.45),
        bump=u(0.15, 0.30),
    )
    kidney_axes = (u(0.15, 0.19), u(0.19, 0.24), u(0.18, 0.24))
    right_kidney = Organ(
        centre=(u(-0.40, -0.32), u(0.36, 0.48), u(0.62, 0.70)),
        axes=kidney_axes,
        angle=u(0.25, 0.55),
        bump=u(0.06, 0.14),
    )
    left_kidney = Organ(
        centre=(u(0.32, 0.40), u(0.36, 0.48), u(0.56, 0.64)),
        axes=kidney_axes,
        angle=-u(0.25, 0.55),
        bump=u(0.06, 0.14),
    )
    stomach = Organ(
        centre=(u(0.28, 0.42), u(-0.30, -0.12), u(0.26, 0.36)),
        axes=(u(0.16, 0.24), u(0.20, 0.28), u(0.14, 0.20)),
        angle=u(-0.6, -0.2),
        bump=0.2,
    )
    return Anatomy(
        seed=seed,
        body_centre=(u(-0.03, 0.03), u(-0.06, 0.02) * fov_fill),
        body_axes=(ax, ay),
        body_power=u(2.1, 2.6),
        widening=u(0.0, 0.08),
        fat=u(0.04, 0.13),
        muscle=u(0.035, 0.05),
        visceral_fat=u(0.2, 0.7),
        warp=u(0.015, 0.035),
        dome=u(0.04, 0.10),
        spine_y=u(0.50, 0.56),
        disc_period=u(0.22, 0.32),
        disc_phase=u(0.0, 1.0),
        liver_lobes=(right_lobe, left_lobe, caudate),
        gallbladder=gallbladder,
        spleen=spleen,
        kidneys=(right_kidney, left_kidney),
        stomach=stomach,
        fill_level=u(0.2, 0.5),
        vessel_density=u(0.05, 0.08),
    )


@dataclass
class TissueMap:
    """The voxel model of one acquisition: tissue classes and CHAOS organ labels, ``[z, y, x]``."""

    tissue: np.ndarray  # uint8 Tissue values
    labels: np.ndarray  # uint8 organ label ids (0 background)
    liver_heterogeneity: np.ndarray  # smooth unit field for contrast variation within the liver


class _Painter:
    """Paints tissues and labels in order, so later structures carve earlier ones consistently."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.tissue = np.zeros(shape, dtype=np.uint8)
        self.labels = np.zeros(shape, dtype=np.uint8)

    def __call__(
        self, mask: np.ndarray, tissue: Tissue, label: int = 0, box: Box | None = None
    ) -> None:
        tissue_view = self.tissue if box is None else self.tissue[box]
        label_view = self.labels if box is None else self.labels[box]
        mask = np.broadcast_to(mask, tissue_view.shape)
        tissue_view[mask] = tissue
        label_view[mask] = label


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a soft union of two implicit shapes without a crease."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def build_tissue_map(
    anatomy: Anatomy, shape: tuple[int, int, int], breath: float = 0.0
) -> TissueMap:
    """Voxelise ``anatomy`` on a ``(z, y, x)`` grid.

    ``breath`` shifts the diaphragm-bound organs (liver, spleen, kidneys, stomach) towards the feet
    by that fraction of the slab, as between two breath-holds of one MR examination.
    """
    nz, ny, nx = shape
    frng = named_rng(anatomy.seed, "fields")
    z = ((np.arange(nz, dtype=np.float32) + 0.5) / nz).reshape(nz, 1, 1)
    y = ((np.arange(ny, dtype=np.float32) + 0.5) / ny * 2 - 1).reshape(1, ny, 1)
    x = ((np.arange(nx, dtype=np.float32) + 0.5) / nx * 2 - 1).reshape(1, 1, nx)

    # global smooth deformation: every structure bends with it, so organs keep their neighbours
    w = anatomy.warp
    xw = x + w * smooth_field(frng, shape)
    yw = y + w * smooth_field(frng, shape)
    zw = z + 0.5 * w * smooth_field(frng, shape, nodes=(4, 4, 4))

    cx, cy = anatomy.body_centre
    ax, ay = anatomy.body_axes
    widen = 1.0 + anatomy.widening * (z - 0.5)
    bx = (xw - cx) / (ax * widen)
    by = (yw - cy) / (ay * widen)
    p = anatomy.body_power
    r = (np.abs(bx) ** p + np.abs(by) ** p) ** (1.0 / p)
    r = r * (1.0 + 0.025 * smooth_field(frng, shape, nodes=(3, 7, 7)))
    fat_t = anatomy.fat * (1.0 + 0.4 * smooth_field(frng, shape, nodes=(3, 5, 5)))
    fat_t = fat_t * (1.0 + 0.5 * np.clip(by, 0, None))  # thicker flanks/back than the front
    wall = 1.0 - fat_t
    cavity_edge = wall - anatomy.muscle

    paint = _Painter(shape)
    body = r < 1.0
    paint(body, Tissue.FAT)
    paint(body & (r < wall), Tissue.MUSCLE)
    cavity = r < cavity_edge
    paint(cavity, Tissue.VISCERAL_FAT)

    # body-relative placement: organ positions follow the patient's size
    scale = anatomy.scale

    def to_image(xp: float, yp: float) -> tuple[float, float]:
        return cx + ax * xp, cy + ay * yp

    def organ_box(organ: Organ, shift_z: float, grow: float = 1.5) -> Box:
        """Index ranges that surely hold the organ (perturbed surfaces included)."""
        ox, oy = to_image(organ.centre[0], organ.centre[1])
        oz = organ.centre[2] + shift_z
        ext_xy = max(organ.axes[0] * ax, organ.axes[1] * ay) * grow + 3 * w
        ext_z = organ.axes[2] * grow + 1.5 * w

        def index_range(lo: float, hi: float, n: int) -> slice:
            # lo, hi as fractions of the axis (0..1); voxel i is centred at (i + 0.5) / n
            first = int(np.floor(lo * n)) - 1
            stop = int(np.ceil(hi * n)) + 1
            return slice(max(0, first), min(n, max(0, stop)))

        return (
            index_range(oz - ext_z, oz + ext_z, nz),
            index_range((oy - ext_xy + 1) / 2, (oy + ext_xy + 1) / 2, ny),
            index_range((ox - ext_xy + 1) / 2, (ox + ext_xy + 1) / 2, nx),
        )

    def ellipsoid(
        organ: Organ, shift_z: float = 0.0, nodes: tuple[int, int, int] = (4, 6, 6)
    ) -> tuple[Box, np.ndarray]:
        """Implicit function (< 0 inside) of a perturbed ellipsoid within its bounding box."""
        box = organ_box(organ, shift_z)
        ox, oy = to_image(organ.centre[0], organ.centre[1])
        oz = organ.centre[2] + shift_z
        dx, dy, dz = xw[box] - ox, yw[box] - oy, zw[box] - oz
        ca, sa = np.cos(organ.angle), np.sin(organ.angle)
        u = ca * dx + sa * dy
        v = -sa * dx + ca * dy
        f = (
            (u / (organ.axes[0] * ax)) ** 2
            + (v / (organ.axes[1] * ay)) ** 2
            + (dz / organ.axes[2]) ** 2
            - 1.0
        )
        f += organ.bump * smooth_field(frng, shape, nodes, box)
        return box, f

    def full(box: Box, sub: np.ndarray, fill: float = 10.0) -> np.ndarray:
        out = np.full(shape, fill, dtype=np.float32)
        out[box] = sub
        return out

    # bowel: loops (a band around the zero level of a random field) with a wall, fluid-like
    # content and gas pockets, packed into the visceral fat below the diaphragm
    loops = smooth_field(frng, shape, nodes=(8, 26, 26))
    gas_noise = smooth_field(frng, shape, nodes=(6, 16, 16))
    band = 0.25 + 0.45 * (1.0 - anatomy.visceral_fat)
    bowel = cavity & (np.abs(loops) < band) & (zw > anatomy.dome + 0.15)
    paint(bowel, Tissue.BOWEL)
    lumen = bowel & (np.abs(loops) < 0.55 * band)
    paint(lumen, Tissue.BOWEL_CONTENT)
    paint(lumen & (gas_noise > 1.6), Tissue.GAS)

    # lungs above the diaphragm dome, which reaches lower at the back and the flanks
    dome = anatomy.dome + 0.12 * (bx**2) + 0.10 * np.clip(by, 0, None) ** 2
    paint(cavity & (zw < dome), Tissue.LUNG)
    diaphragm = 0.012 + 0.25 * anatomy.muscle
    paint(cavity & (zw >= dome) & (zw < dome + diaphragm), Tissue.MUSCLE)
    below_dome = zw >= dome + diaphragm

    # stomach (left upper quadrant): wall, fluid, and gas on top (anterior, supine patient)
    stomach_f = full(*ellipsoid(anatomy.stomach, breath))
    stomach = cavity & below_dome & (stomach_f < 0)
    paint(stomach, Tissue.STOMACH_WALL)
    inner = stomach & (stomach_f < -0.35)
    paint(inner, Tissue.FLUID)
    s_top = to_image(0.0, anatomy.stomach.centre[1] - anatomy.stomach.axes[1])[1]
    s_bot = to_image(0.0, anatomy.stomach.centre[1] + anatomy.stomach.axes[1])[1]
    paint(inner & (yw < s_top + anatomy.fill_level * (s_bot - s_top)), Tissue.GAS)

    # liver: soft union of right lobe, left lobe and caudate, under the diaphragm
    lobes = [full(*ellipsoid(lobe, breath, nodes=(5, 7, 7))) for lobe in anatomy.liver_lobes]
    liver_f = _smooth_min(_smooth_min(lobes[0], lobes[1], 0.4), lobes[2], 0.3)
    liver = cavity & below_dome & (liver_f < 0)
    paint(liver, Tissue.LIVER, LIVER)
    # portal/hepatic vessels: tubes where two smooth random surfaces cross inside the liver
    v1 = smooth_field(frng, shape, nodes=(7, 11, 11))
    v2 = smooth_field(frng, shape, nodes=(7, 11, 11))
    thick = anatomy.vessel_density
    tubes = (np.abs(v1) < 2.5 * thick) & (np.abs(v2) < 2.5 * thick)
    paint(liver & tubes & (liver_f < -0.15), Tissue.LIVER_VESSEL, LIVER)
    box, gb_f = ellipsoid(anatomy.gallbladder, breath)
    paint(cavity[box] & (gb_f < 0), Tissue.FLUID, box=box)

    # spleen: ellipsoid with a concave hilum facing the midline
    box, spleen_f = ellipsoid(anatomy.spleen, breath, nodes=(5, 7, 7))
    hx, hy = to_image(
        anatomy.spleen.centre[0] - 0.28 * anatomy.spleen.axes[0] / 0.13,
        anatomy.spleen.centre[1] - 0.05,
    )
    hilum_d = ((xw[box] - hx) / (0.14 * ax * scale)) ** 2 + (
        (yw[box] - hy) / (0.18 * ay * scale)
    ) ** 2
    spleen = cavity[box] & below_dome[box] & (spleen_f < 0) & (hilum_d > 1.0)
    paint(spleen, Tissue.SPLEEN, SPLEEN, box=box)

    # kidneys: cortex shell, medullary pyramids, fatty sinus and fluid pelvis at the medial hilum
    pyramids = smooth_field(frng, shape, nodes=(6, 12, 12))
    for organ, label in zip(anatomy.kidneys, (RIGHT_KIDNEY, LEFT_KIDNEY), strict=True):
        box, kf = ellipsoid(organ, 0.6 * breath)
        side = -1.0 if label == RIGHT_KIDNEY else 1.0
        kx, ky = to_image(organ.centre[0] - side * 0.75 * organ.axes[0], organ.centre[1] - 0.04)
        kz = organ.centre[2] + 0.6 * breath
        sinus = (
            ((xw[box] - kx) / (0.55 * organ.axes[0] * ax)) ** 2
            + ((yw[box] - ky) / (0.45 * organ.axes[1] * ay)) ** 2
            + ((zw[box] - kz) / (0.5 * organ.axes[2])) ** 2
        )
        inside = cavity[box] & (kf < 0)
        kidney = inside & (sinus > 1.0)
        paint(kidney, Tissue.KIDNEY_CORTEX, label, box=box)
        medulla = kidney & (kf < -0.35 + 0.2 * pyramids[box])
        paint(medulla, Tissue.KIDNEY_MEDULLA, label, box=box)
        paint(inside & (sinus <= 1.0), Tissue.VISCERAL_FAT, box=box)
        paint(inside & (sinus <= 0.35), Tissue.FLUID, box=box)

    # great vessels in front of the spine (aorta on the patient's left, IVC on the right)
    sx, sy = to_image(0.0, anatomy.spine_y)
    rv = 0.085 * scale
    aorta = ((xw - (sx + 0.45 * rv)) ** 2 + (yw - (sy - 1.55 * rv)) ** 2) < (0.42 * rv) ** 2
    paint(cavity & aorta & below_dome, Tissue.AORTA)
    ivc_x, ivc_y = sx - 1.2 * rv, sy - 1.45 * rv
    ivc = ((xw - ivc_x) / (0.55 * rv)) ** 2 + ((yw - ivc_y) / (0.4 * rv)) ** 2 < 1.0
    paint(cavity & ivc & below_dome, Tissue.IVC)

    # muscles beside the spine: psoas grows towards the feet, erector spinae behind
    for sgn in (-1.0, 1.0):
        psoas_r = rv * (0.15 + 1.0 * np.clip(zw - 0.45, 0, None) / 0.55)
        psoas = ((xw - (sx + sgn * 1.5 * rv)) ** 2 + (yw - (sy - 0.1 * rv)) ** 2) < psoas_r**2
        paint(body & psoas & (zw > 0.45), Tissue.MUSCLE)
        erector = ((xw - (sx + sgn * 1.5 * rv)) / (1.2 * rv)) ** 2 + (
            (yw - (sy + 2.0 * rv)) / (1.0 * rv)
        ) ** 2 < 1.0
        paint(body & erector, Tissue.MUSCLE)

    # vertebra: cortical shell, marrow, discs between levels, canal with CSF, posterior arch
    dvert = np.sqrt((xw - sx) ** 2 + ((yw - sy) / 0.9) ** 2)
    level = np.mod((zw - anatomy.disc_phase * anatomy.disc_period) / anatomy.disc_period, 1.0)
    disc = level < 0.16
    vbody = body & (dvert < rv)
    paint(vbody, Tissue.CORTICAL_BONE)
    paint(vbody & (dvert < 0.82 * rv), Tissue.MARROW)
    paint(vbody & disc, Tissue.DISC)
    canal_y = sy + 1.55 * rv
    dcanal = np.sqrt((xw - sx) ** 2 + (yw - canal_y) ** 2)
    arch = body & (dcanal < 0.75 * rv) & ~disc
    spinous = body & (np.abs(xw - sx) < 0.18 * rv) & (yw > canal_y) & (yw < canal_y + 1.6 * rv)
    paint(arch | (spinous & ~disc), Tissue.CORTICAL_BONE)
    paint(body & (dcanal < 0.45 * rv), Tissue.CSF)

    # ribs: short bony segments along the inside of the wall in the upper abdomen
    theta = np.arctan2(by, bx)
    rib_band = np.sin(2 * np.pi * (zw / 0.13 + 3.0 * theta / np.pi)) > 0.72
    ribs = (
        body
        & (r > cavity_edge - 0.07)
        & (r < cavity_edge + 0.005)
        & rib_band
        & (zw < 0.55)
        & (np.abs(np.cos(theta)) > 0.45)
    )
    paint(ribs, Tissue.CORTICAL_BONE)

    liver_het = smooth_field(frng, shape, nodes=(4, 6, 6))
    return TissueMap(paint.tissue, paint.labels, liver_het)


# -- rendering ---------------------------------------------------------------------------------


def _lookup(tissue: np.ndarray, table: dict[Tissue, float], default: float = 0.0) -> np.ndarray:
    lut = np.full(N_TISSUES, default, dtype=np.float32)
    for t, value in table.items():
        lut[int(t)] = value
    return lut[tissue]


def add_ct_table(tm: TissueMap, anatomy: Anatomy) -> None:
    """The patient couch under the back: a dense top plate over foam, outside the body only."""
    _nz, ny, nx = tm.tissue.shape
    y = (np.arange(ny) + 0.5) / ny * 2 - 1
    x = (np.arange(nx) + 0.5) / nx * 2 - 1
    body_rows = np.flatnonzero((tm.tissue != Tissue.AIR).any(axis=(0, 2)))
    top = (
        y[body_rows[-1]] if body_rows.size else anatomy.body_centre[1] + anatomy.body_axes[1]
    ) + 0.01
    plate = (y >= top) & (y < top + 0.015)
    foam = (y >= top + 0.015) & (y < top + 0.06)
    width = np.abs(x) < 0.92
    air = tm.tissue == Tissue.AIR
    tm.tissue[air & (plate[None, :, None] & width[None, None, :])] = Tissue.TABLE
    tm.tissue[air & (foam[None, :, None] & width[None, None, :])] = Tissue.TABLE_FOAM


@dataclass(frozen=True)
class CTContrast:
    """Per-case CT appearance (HU means, noise) for a portal-venous abdominal scan."""

    table: dict[Tissue, float]
    liver_variation: float  # HU amplitude of the smooth in-liver contrast variation
    noise: float  # HU standard deviation of the quantum noise
    texture: float  # HU amplitude of organ texture


def sample_ct_contrast(rng: np.random.Generator) -> CTContrast:
    """Random but plausible CT attenuation (HU) per tissue, drawn from ``rng``."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    liver = u(52, 68)
    table = {
        Tissue.AIR: -1000.0,
        Tissue.FAT: u(-115, -90),
        Tissue.VISCERAL_FAT: u(-110, -85),
        Tissue.MUSCLE: u(40, 55),
        Tissue.BOWEL: u(30, 50),
        Tissue.BOWEL_CONTENT: u(5, 35),
        Tissue.GAS: -980.0,
        Tissue.LUNG: u(-880, -820),
        Tissue.CORTICAL_BONE: u(700, 1000),
        Tissue.MARROW: u(180, 320),
        Tissue.DISC: u(70, 100),
        Tissue.CSF: u(5, 20),
        Tissue.AORTA: u(150, 210),
        Tissue.IVC: u(110, 160),
        Tissue.LIVER: liver,
        Tissue.LIVER_VESSEL: liver + u(50, 100),
        Tissue.FLUID: u(0, 18),
        Tissue.SPLEEN: u(45, 60),
        Tissue.KIDNEY_CORTEX: u(150, 200),
        Tissue.KIDNEY_MEDULLA: u(90, 140),
        Tissue.STOMACH_WALL: u(40, 70),
        Tissue.TABLE: u(150, 300),
        Tissue.TABLE_FOAM: u(-900, -800),
    }
    return CTContrast(table=table, liver_variation=u(3, 8), noise=u(8, 18), texture=u(4, 9))


def render_ct(tm: TissueMap, contrast: CTContrast, rng: np.random.Generator) -> np.ndarray:
    """Hounsfield units (float32): tissue table, texture, partial-volume blur, correlated noise."""
    hu = _lookup(tm.tissue, contrast.table)
    tex = texture(rng, hu.shape, 1.2)
    organ = np.isin(
        tm.tissue,
        [
            Tissue.LIVER,
            Tissue.SPLEEN,
            Tissue.KIDNEY_CORTEX,
            Tissue.KIDNEY_MEDULLA,
            Tissue.MUSCLE,
            Tissue.BOWEL,
            Tissue.MARROW,
        ],
    )
    hu += np.where(organ, contrast.texture, 2.0).astype(np.float32) * tex
    hu += (
        np.where(tm.tissue == Tissue.LIVER, contrast.liver_variation, 0.0).astype(np.float32)
        * tm.liver_heterogeneity
    )
    content = np.where(tm.tissue == Tissue.BOWEL_CONTENT, 15.0, 0.0).astype(np.float32)
    hu += content * texture(rng, hu.shape, 2.0)
    hu = ndimage.gaussian_filter(hu, (0.35, 0.7, 0.7))  # partial volume at edges
    noise = texture(rng, hu.shape, 0.6)
    return hu + contrast.noise * noise


@dataclass(frozen=True)
class MRContrast:
    """Per-case MR appearance: proton signal, fat fraction and T2-SPIR signal per tissue."""

    signal: dict[Tissue, float]  # T1-weighted in-phase signal (0..1)
    fat_fraction: dict[Tissue, float]
    t2: dict[Tissue, float]  # T2-SPIR signal (0..1), fat suppressed
    gain: float  # stored units per unit signal
    noise: float  # noise sigma relative to unit signal
    bias: float  # amplitude of the multiplicative coil sensitivity field


def sample_mr_contrast(rng: np.random.Generator) -> MRContrast:
    """Random but plausible MR signal, fat fraction and T2 per tissue, drawn from ``rng``."""

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    signal = {
        Tissue.FAT: u(0.92, 1.0),
        Tissue.VISCERAL_FAT: u(0.88, 0.98),
        Tissue.MUSCLE: u(0.28, 0.38),
        Tissue.BOWEL: u(0.32, 0.42),
        Tissue.BOWEL_CONTENT: u(0.12, 0.30),
        Tissue.LUNG: 0.03,
        Tissue.CORTICAL_BONE: 0.04,
        Tissue.MARROW: u(0.55, 0.70),
        Tissue.DISC: u(0.25, 0.35),
        Tissue.CSF: u(0.10, 0.16),
        Tissue.AORTA: u(0.08, 0.25),
        Tissue.IVC: u(0.15, 0.30),
        Tissue.LIVER: u(0.50, 0.62),
        Tissue.LIVER_VESSEL: u(0.15, 0.25),
        Tissue.FLUID: u(0.10, 0.18),
        Tissue.SPLEEN: u(0.40, 0.50),
        Tissue.KIDNEY_CORTEX: u(0.44, 0.54),
        Tissue.KIDNEY_MEDULLA: u(0.32, 0.40),
        Tissue.STOMACH_WALL: u(0.35, 0.45),
    }
    fat_fraction = {
        Tissue.FAT: 0.9,
        Tissue.VISCERAL_FAT: 0.9,
        Tissue.MARROW: u(0.35, 0.5),
        Tissue.LIVER: float(rng.choice([u(0.0, 0.04), u(0.08, 0.22)], p=[0.6, 0.4])),
        Tissue.MUSCLE: 0.02,
        Tissue.BOWEL: 0.05,
    }
    t2 = {
        Tissue.FAT: u(0.05, 0.10),
        Tissue.VISCERAL_FAT: u(0.05, 0.10),
        Tissue.MUSCLE: u(0.12, 0.18),
        Tissue.BOWEL: u(0.22, 0.32),
        Tissue.BOWEL_CONTENT: u(0.45, 0.85),
        Tissue.LUNG: 0.02,
        Tissue.CORTICAL_BONE: 0.02,
        Tissue.MARROW: u(0.12, 0.22),
        Tissue.DISC: u(0.45, 0.65),
        Tissue.CSF: u(0.85, 1.0),
        Tissue.AORTA: u(0.03, 0.08),
        Tissue.IVC: u(0.05, 0.12),
        Tissue.LIVER: u(0.22, 0.30),
        Tissue.LIVER_VESSEL: u(0.05, 0.12),
        Tissue.FLUID: u(0.85, 1.0),
        Tissue.SPLEEN: u(0.48, 0.62),
        Tissue.KIDNEY_CORTEX: u(0.48, 0.60),
        Tissue.KIDNEY_MEDULLA: u(0.60, 0.75),
        Tissue.STOMACH_WALL: u(0.25, 0.35),
    }
    return MRContrast(
        signal=signal,
        fat_fraction=fat_fraction,
        t2=t2,
        gain=u(900, 1400),
        noise=u(0.02, 0.04),
        bias=u(0.10, 0.25),
    )


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels (Rician statistics)."""
    re = signal + sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    im = sigma * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(re * re + im * im)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amp: float) -> np.ndarray:
    """Smooth multiplicative receive-coil sensitivity, brighter near the anterior coil."""
    ny = shape[1]
    front = np.linspace(0.5, -0.5, ny, dtype=np.float32).reshape(1, ny, 1)
    return np.exp(amp * (smooth_field(rng, shape, nodes=(3, 4, 4)) * 0.7 + front))


def _textured(
    tm: TissueMap, s: np.ndarray, rng: np.random.Generator, amounts: tuple[float, float, float]
) -> np.ndarray:
    """Tissue signal ``s`` with fine texture everywhere, the liver's heterogeneity and mottled bowel
    content; ``amounts``: (texture, liver heterogeneity, bowel content) strengths."""
    tissue, liver, content = amounts
    tex = texture(rng, s.shape, 1.2)
    s = s * (
        1.0
        + tissue * tex
        + np.where(tm.tissue == Tissue.LIVER, liver, 0.0) * tm.liver_heterogeneity
    )
    bowel = np.where(tm.tissue == Tissue.BOWEL_CONTENT, content, 0.0)
    return s * (1.0 + bowel * texture(rng, s.shape, 2.0))


def render_t1_dual(
    tm: TissueMap, contrast: MRContrast, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """In-phase and opposed-phase T1 images in scanner units (float32).

    Water and fat signals are blurred separately before combining, so voxels that straddle a
    fat–water boundary cancel in opposed phase (the India-ink artefact) while in-phase adds them;
    a fatty liver loses signal in opposed phase for the same reason.
    """
    s = _textured(tm, _lookup(tm.tissue, contrast.signal), rng, (0.06, 0.05, 0.2))
    ff = _lookup(tm.tissue, contrast.fat_fraction)
    water = ndimage.gaussian_filter(s * (1.0 - ff), (0.35, 0.7, 0.7))
    fat = ndimage.gaussian_filter(s * ff, (0.35, 0.7, 0.7))
    bias = _bias_field(rng, s.shape, contrast.bias)
    in_phase = (water + fat) * bias
    out_phase = np.abs(water - fat) * bias * 1.03  # shorter TE: slightly less T2* decay
    sigma = contrast.noise
    return (
        contrast.gain * _rician(in_phase, sigma, rng),
        contrast.gain * _rician(out_phase, sigma, rng),
    )


def render_t2_spir(tm: TissueMap, contrast: MRContrast, rng: np.random.Generator) -> np.ndarray:
    """Fat-suppressed T2-weighted image in scanner units (float32)."""
    s = _textured(tm, _lookup(tm.tissue, contrast.t2), rng, (0.08, 0.06, 0.25))
    s = ndimage.gaussian_filter(np.clip(s, 0, None), (0.35, 0.7, 0.7))
    s = s * _bias_field(rng, s.shape, contrast.bias * 1.3)
    return contrast.gain * 1.6 * _rician(s, contrast.noise * 0.8, rng)
