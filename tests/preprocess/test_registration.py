"""Rigid T2 → T1 registration: recovers a known patient motion, refuses what it cannot establish."""

from __future__ import annotations

import numpy as np
import pytest

from organseg.errors import DataError
from organseg.io.volume import Geometry, Volume
from organseg.preprocess.registration import (
    RigidRegistration,
    align_to,
    check_registration,
    register_rigid,
)
from organseg.synth.motion import moved_pair


@pytest.mark.parametrize("seed", [0, 2])
def test_recovers_a_known_rotation_and_translation(seed: int) -> None:
    # 2°/-1.5°/3° rotation and a (6, -4, 9) mm shift; T2 on its own 1.2×1.2×0.85 × T1 spacing grid
    pair = moved_pair(seed, size=96, slices=20)
    assert pair.t2.shape != pair.t1.shape
    assert pair.t2.spacing != pair.t1.spacing
    before = pair.residual_mm(None)
    aligned, registration = align_to(pair.t1, pair.t2)
    after = pair.residual_mm(registration.transform())
    pixel = pair.t1.spacing[0]  # ~5 mm at 96²
    assert before.mean() > 10.0
    assert after.mean() < 0.5 * pixel, (before.mean(), after.mean())
    assert after.max() < pixel
    assert registration.mutual_information > registration.initial_mutual_information
    assert abs(registration.rotation_deg - 3.9) < 1.5
    # resampled onto the T1 grid, with the T1 geometry
    assert aligned.shape == pair.t1.shape
    assert aligned.geometry == pair.t1.geometry


def test_registration_is_deterministic() -> None:
    pair = moved_pair(1, size=64, slices=16)
    first = register_rigid(pair.t1, pair.t2)
    second = register_rigid(pair.t1, pair.t2)
    assert first.parameters == second.parameters


def _feet_first(volume: Volume) -> Volume:
    """The same volume stacked in the opposite slice order (same voxels in space)."""
    g = volume.geometry
    direction = np.asarray(g.direction).reshape(3, 3)
    origin = np.asarray(g.origin) + direction[:, 2] * g.spacing[2] * (volume.shape[0] - 1)
    direction[:, 2] *= -1
    flipped = Geometry(g.spacing, tuple(origin), tuple(direction.ravel()))
    return Volume(volume.array[::-1].copy(), flipped, volume.modality)


def test_slice_order_does_not_change_the_registration() -> None:
    # a file-ordered CHAOS folder and the position-ordered upload of it register identically
    pair = moved_pair(1, size=64, slices=16)
    straight = register_rigid(pair.t1, pair.t2)
    reversed_ = register_rigid(_feet_first(pair.t1), _feet_first(pair.t2))
    assert reversed_.parameters == straight.parameters
    assert reversed_.mutual_information == straight.mutual_information


def test_noise_instead_of_t2_is_refused_naming_the_series() -> None:
    pair = moved_pair(0, size=64, slices=16)
    noise = np.random.default_rng(0).random(pair.t2.shape).astype(np.float32) * 500
    with pytest.raises(DataError, match="the T2-SPIR series"):
        align_to(
            pair.t1, Volume(noise, pair.t2.geometry), "the T1 in-phase series", "the T2-SPIR series"
        )


def test_implausible_motion_and_small_overlap_are_refused() -> None:
    def result(angle: float = 0.0, shift: float = 0.0, mi: float = 0.5) -> RigidRegistration:
        return RigidRegistration(
            (0.0, 0.0, angle, shift, 0.0, 0.0), (0.0, 0.0, 0.0), mi, 0.3, 10, ""
        )

    check_registration(result(0.05, 5.0), 0.9, "T1", "T2")  # 3°, 5 mm: patient motion
    with pytest.raises(DataError, match=r"T2 onto T1.*rotation"):
        check_registration(result(angle=0.4), 0.9, "T1", "T2")
    with pytest.raises(DataError, match="shift"):
        check_registration(result(shift=80.0), 0.9, "T1", "T2")
    with pytest.raises(DataError, match="poor match"):
        check_registration(result(mi=0.05), 0.9, "T1", "T2")
    with pytest.raises(DataError, match="covers only 30%"):
        check_registration(result(), 0.3, "T1", "T2")
