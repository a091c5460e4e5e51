"""Rigid T2 → T1 registration, so a patient's T2-SPIR can be stacked as a channel on the T1 grid.

T1 in- and out-phase come from one dual-echo acquisition and share a grid voxel for voxel; T2-SPIR is a
separate breath-hold with its own slices, so the patient has moved between the two. Stacking T2 on T1
by header geometry alone would put a different piece of anatomy under each T1 voxel. We therefore
estimate the rigid motion (SimpleITK: Euler3D transform, Mattes mutual information since the contrasts
differ, moments-centred start, three-level pyramid) and resample T2 onto the T1 grid with it.

The same function runs when the training cache is built and before prediction (local and served), so
a model sees identically registered channels in both. Registration is single-threaded with regular
(not random) metric sampling: the result then does not depend on the machine's core count or on
scheduling (ITK's multi-threaded metric and pyramid filters sum in varying order; the registration
method's own thread setting does not reach the pyramid, so ITK's global default is set to one thread
for its duration, under a lock, and restored). A failed
or implausible registration raises :class:`~organseg.errors.DataError` naming both series; a
misregistered channel is never stacked silently.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from organseg.errors import DataError
from organseg.io.volume import Volume

#: Patient motion between two series of one MR examination stays within this (headers give the rest).
MAX_TRANSLATION_MM = 40.0
MAX_ROTATION_DEG = 12.0
#: Mattes mutual information (nats) below which two abdominal MR contrasts are not considered aligned.
MIN_MUTUAL_INFORMATION = 0.15
#: Share of the T1 grid the resampled T2 must cover.
MIN_OVERLAP = 0.6


@dataclass(frozen=True)
class RigidRegistration:
    """The transform mapping T1 (fixed) physical points to T2 (moving) points, and how it was found."""

    parameters: tuple[float, ...]  # Euler3D: angle x, y, z (rad), translation x, y, z (mm)
    center: tuple[float, float, float]
    mutual_information: float  # final -metric (nats, higher is better)
    initial_mutual_information: float  # at the header geometry (identity)
    iterations: int
    stop: str

    def transform(self) -> sitk.Euler3DTransform:
        t = sitk.Euler3DTransform()
        t.SetCenter(self.center)
        t.SetParameters(self.parameters)
        return t

    @property
    def rotation_deg(self) -> float:
        """Magnitude of the rotation (degrees)."""
        matrix = np.asarray(self.transform().GetMatrix()).reshape(3, 3)
        cos = (float(np.trace(matrix)) - 1.0) / 2.0
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))

    @property
    def translation_mm(self) -> float:
        """Displacement of the T1 volume's centre (mm)."""
        t = self.transform()
        c = np.asarray(self.center)
        return float(np.linalg.norm(np.asarray(t.TransformPoint(tuple(c))) - c))

    def summary(self) -> dict[str, float]:
        """What a prediction report says about the registration (degrees, mm, nats)."""
        return {
            "rotation_deg": round(self.rotation_deg, 4),
            "translation_mm": round(self.translation_mm, 4),
            "mutual_information": round(self.mutual_information, 5),
            "initial_mutual_information": round(self.initial_mutual_information, 5),
            "iterations": float(self.iterations),
        }


_SINGLE_THREAD = threading.Lock()


@contextlib.contextmanager
def _single_threaded_itk() -> Iterator[None]:
    with _SINGLE_THREAD:
        previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            yield
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _float_image(volume: Volume) -> sitk.Image:
    return sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)


def _method() -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.25, 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=300,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetNumberOfThreads(1)
    return method


def register_rigid(fixed: Volume, moving: Volume) -> RigidRegistration:
    """Rigid transform aligning ``moving`` (T2) to ``fixed`` (T1 in-phase), in physical space.

    Raises :class:`DataError` when ITK gives up (e.g. the series do not overlap); judging the result
    is :func:`check_registration`'s job.
    """
    # Both in one canonical axis order (LPS): ITK's regular metric sampling and its sums follow voxel
    # order, so a series stacked head-first and the same series stacked feet-first would otherwise
    # register slightly differently (a file-ordered CHAOS folder vs a position-ordered upload).
    f = sitk.DICOMOrient(_float_image(fixed), "LPS")
    m = sitk.DICOMOrient(_float_image(moving), "LPS")
    method = _method()
    try:
        with _single_threaded_itk():
            start = sitk.CenteredTransformInitializer(
                f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
            )
            method.SetInitialTransform(sitk.Euler3DTransform(start), inPlace=False)
            identity = _method()
            identity.SetInitialTransform(sitk.Euler3DTransform(start.GetCenter()), inPlace=False)
            initial = -identity.MetricEvaluate(f, m)
            found = method.Execute(f, m)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200]
        raise DataError(f"registration failed: {first}") from None
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(found).GetNthTransform(0))
    return RigidRegistration(
        parameters=tuple(float(p) for p in euler.GetParameters()),
        center=tuple(float(c) for c in euler.GetCenter()),  # type: ignore[arg-type]
        mutual_information=-float(method.GetMetricValue()),
        initial_mutual_information=float(initial),
        iterations=int(method.GetOptimizerIteration()),
        stop=method.GetOptimizerStopConditionDescription(),
    )


def resample_onto(moving: Volume, fixed: Volume, registration: RigidRegistration) -> Volume:
    """``moving`` resampled (linear, 0 outside) onto ``fixed``'s grid with the registration's transform."""
    out = sitk.Resample(
        _float_image(moving),
        _float_image(fixed),
        registration.transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    array = sitk.GetArrayFromImage(out)
    return Volume(array, fixed.geometry, moving.modality, dict(moving.meta))


def _overlap(moving: Volume, fixed: Volume, registration: RigidRegistration) -> float:
    ones = Volume(np.ones(moving.shape, np.float32), moving.geometry)
    covered = resample_onto(ones, fixed, registration).array
    return float((covered > 0.5).mean())


def check_registration(
    registration: RigidRegistration, overlap: float, fixed_name: str, moving_name: str
) -> None:
    """Refuse a registration that is implausible for two series of one examination, or poor."""
    where = f"registering {moving_name} onto {fixed_name}"
    if registration.rotation_deg > MAX_ROTATION_DEG:
        raise DataError(
            f"{where}: found a {registration.rotation_deg:.1f}° rotation (more than "
            f"{MAX_ROTATION_DEG:g}° is not patient motion between series); not stacking {moving_name}"
        )
    if registration.translation_mm > MAX_TRANSLATION_MM:
        raise DataError(
            f"{where}: found a {registration.translation_mm:.1f} mm shift (more than "
            f"{MAX_TRANSLATION_MM:g} mm is not patient motion between series); not stacking {moving_name}"
        )
    if registration.mutual_information < MIN_MUTUAL_INFORMATION:
        raise DataError(
            f"{where}: poor match after registration (mutual information "
            f"{registration.mutual_information:.3f} < {MIN_MUTUAL_INFORMATION}; {registration.stop}); "
            f"not stacking {moving_name}"
        )
    if overlap < MIN_OVERLAP:
        raise DataError(
            f"{where}: {moving_name} covers only {overlap:.0%} of {fixed_name} after registration "
            f"(needs {MIN_OVERLAP:.0%}); not stacking it"
        )


def align_to(
    fixed: Volume, moving: Volume, fixed_name: str = "T1", moving_name: str = "T2"
) -> tuple[Volume, RigidRegistration]:
    """``moving`` rigidly registered and resampled onto ``fixed``'s grid, after the checks above.

    The names (series kinds such as ``T1 in-phase``, never file names) appear in errors.
    """
    try:
        registration = register_rigid(fixed, moving)
    except DataError as exc:
        raise DataError(f"registering {moving_name} onto {fixed_name}: {exc}") from None
    check_registration(registration, _overlap(moving, fixed, registration), fixed_name, moving_name)
    return resample_onto(moving, fixed, registration), registration
