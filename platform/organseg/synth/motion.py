"""A synthetic T1/T2 pair with a known rigid patient motion between them, to measure registration.

The synthesised CHAOS MR cases move the organs between the T1 and T2 breath-holds (non-rigid), so
their true T2 → T1 transform is not a rigid one. Here T2-SPIR is rendered from the *T1* anatomy and
then moved by an exactly known rigid transform onto a T2 scanner grid with its own spacing: the
residual of a rigid registration is then measurable in millimetres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from organseg.io.volume import Geometry, Modality, Volume
from organseg.synth.case import _REFERENCE_FOV_MM, Series, make_mr_case
from organseg.synth.phantom import (
    build_tissue_map,
    named_rng,
    render_t2_spir,
    sample_anatomy,
    sample_mr_contrast,
)

#: Slices run head → feet in the synthesised series (as the CHAOS MR folders do).
_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


@dataclass
class MovedPair:
    """T1 in-phase (fixed), a rigidly moved T2 (moving), the truth, and liver points to measure on."""

    t1: Volume
    t2: Volume
    truth: sitk.Euler3DTransform  # maps T1 physical points to where that anatomy lies in T2
    liver_points: np.ndarray  # (N, 3) physical T1 points (mm) inside the liver

    def residual_mm(self, transform: sitk.Transform | None) -> np.ndarray:
        """Per liver point: distance (mm) between where ``transform`` and the truth map it
        (``None``: the header geometry alone, i.e. the identity)."""
        true = np.array([self.truth.TransformPoint(tuple(p)) for p in self.liver_points])
        if transform is None:
            found = self.liver_points
        else:
            found = np.array([transform.TransformPoint(tuple(p)) for p in self.liver_points])
        return np.linalg.norm(true - found, axis=1)


def _volume(series: Series, modality: Modality, array: np.ndarray | None = None) -> Volume:
    geometry = Geometry(series.spacing, series.first_position, _DIRECTION)
    image = series.real_values() if array is None else array
    return Volume(image.astype(np.float32), geometry, modality)


def moved_pair(
    seed: int = 0,
    size: int = 96,
    slices: int = 24,
    rotation_deg: tuple[float, float, float] = (2.0, -1.5, 3.0),
    translation_mm: tuple[float, float, float] = (6.0, -4.0, 9.0),
    t2_spacing_scale: tuple[float, float, float] = (1.2, 1.2, 0.85),
    points: int = 500,
) -> MovedPair:
    """T1 in-phase of synthetic MR case ``seed`` and a T2-SPIR of the same anatomy moved by a rigid
    transform (rotations about x, y, z in degrees about the liver's centre, then ``translation_mm``) and
    sampled on a grid of ``t2_spacing_scale`` × the T1 spacing covering the same field of view."""
    case = make_mr_case(size, slices, seed)
    t1_series = case.series[0]
    t1 = _volume(t1_series, Modality.MR_T1_IN)
    fov = t1_series.pixel_spacing[0] * size
    anatomy = sample_anatomy(seed, fov_fill=_REFERENCE_FOV_MM / fov)
    contrast = sample_mr_contrast(named_rng(seed, "mr-contrast"))
    tissue = build_tissue_map(anatomy, (slices, size, size))  # T1's anatomy, no breath-hold change
    t2_on_t1 = render_t2_spir(tissue, contrast, named_rng(seed, "t2-noise"))

    t1_image = sitk.GetImageFromArray(t2_on_t1.astype(np.float32))
    t1_image.SetSpacing(t1.spacing)
    t1_image.SetOrigin(t1.origin)
    t1_image.SetDirection(t1.direction)
    liver = np.argwhere(tissue.labels == 1)
    pick = np.random.default_rng(seed).choice(len(liver), min(points, len(liver)), replace=False)
    liver_points = np.array(
        [
            t1_image.TransformContinuousIndexToPhysicalPoint(tuple(float(i) for i in v[::-1]))
            for v in liver[pick]
        ]
    )
    truth = sitk.Euler3DTransform()
    truth.SetCenter(tuple(float(c) for c in liver_points.mean(axis=0)))
    truth.SetRotation(*(math.radians(a) for a in rotation_deg))
    truth.SetTranslation(translation_mm)

    # the T2 scanner grid: same field of view and orientation, its own spacing
    t2_spacing = tuple(s * k for s, k in zip(t1.spacing, t2_spacing_scale, strict=True))
    t2_size = [
        max(4, round(n * s / t))
        for n, s, t in zip(t1_image.GetSize(), t1.spacing, t2_spacing, strict=True)
    ]
    grid = sitk.Image(t2_size, sitk.sitkFloat32)
    grid.SetSpacing(t2_spacing)
    grid.SetOrigin(t1.origin)
    grid.SetDirection(t1.direction)
    # anatomy at T1 point x lies at truth(x) in T2: the T2 voxel at p shows T1's anatomy at truth⁻¹(p)
    moved = sitk.Resample(t1_image, grid, truth.GetInverse(), sitk.sitkLinear, 0.0)
    t2 = Volume(
        sitk.GetArrayFromImage(moved),
        Geometry(t2_spacing, t1.origin, t1.direction),
        Modality.MR_T2SPIR,
    )
    return MovedPair(t1, t2, truth, liver_points)
