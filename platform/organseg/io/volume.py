"""The one image type of organseg: voxels plus the geometry and modality that give them meaning.

Training, local prediction, the Serve graph and evaluation all pass :class:`Volume` objects, so a model
sees the same pixels and a metric the same millimetres everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from organseg.modalities import Modality

_META_PREFIX = "organseg:"
_MODALITY_KEY = _META_PREFIX + "modality"

__all__ = ["Geometry", "Modality", "Volume"]


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid, in SimpleITK conventions (x, y, z order, millimetres).

    ``direction`` is the row-major 3×3 matrix whose columns are the world directions of the x, y, z
    index axes. It may be left-handed: CHAOS slices follow file-name order, which can run against
    the patient axis.
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError(
                "Geometry needs 3 spacings, 3 origin coordinates and 9 direction values"
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"voxel spacing must be positive and finite, got {self.spacing}")

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def affine(self) -> np.ndarray:
        """4×4 matrix taking a voxel index (x, y, z, 1) to world millimetres."""
        out = np.eye(4)
        out[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        out[:3, 3] = self.origin
        return out

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (spacing in mm, 1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    def isclose(self, other: Geometry, rtol: float = 1e-5, atol: float = 1e-4) -> bool:
        """Same spacing, origin and direction within tolerances (mm and direction cosines)."""
        return (
            np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol)
            and np.allclose(self.origin, other.origin, rtol=rtol, atol=atol)
            and np.allclose(self.direction, other.direction, rtol=rtol, atol=atol)
        )


@dataclass
class Volume:
    """A 3D image or label map.

    ``array`` is indexed ``[z, y, x]`` (NumPy order, as SimpleITK returns it); ``geometry`` is in
    SimpleITK's ``(x, y, z)`` order. ``meta`` holds string facts about the source (file paths, DICOM
    tags such as ``SeriesDescription`` or ``EchoTime``) that the router and reports use.
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    modality: Modality = Modality.UNKNOWN
    meta: dict[str, str] = field(default_factory=dict)
    #: set by :func:`organseg.io.validate.validate_volume` once these voxels and this geometry
    #: passed, so a volume checked where it arrived is not checked again before the network
    validated: bool = field(default=False, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"a Volume holds a 3D [z, y, x] array, got shape {self.array.shape}")
        self.modality = Modality.parse(self.modality)

    # -- convenience views -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(x, y, z)`` millimetres."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        return self.geometry.origin

    @property
    def direction(self) -> tuple[float, ...]:
        return self.geometry.direction

    def with_array(self, array: np.ndarray, modality: Modality | str | None = None) -> Volume:
        """Same geometry and metadata, new voxels (e.g. a prediction on this image's grid)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.shape}")
        return dataclasses.replace(
            self,
            array=array,
            modality=self.modality if modality is None else Modality.parse(modality),
            meta=dict(self.meta),
        )

    # -- SimpleITK bridge ----------------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image with the same voxels, geometry, modality and metadata."""
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=False)
        image.SetSpacing(self.geometry.spacing)
        image.SetOrigin(self.geometry.origin)
        image.SetDirection(self.geometry.direction)
        image.SetMetaData(_MODALITY_KEY, self.modality.value)
        for key, value in self.meta.items():
            image.SetMetaData(_META_PREFIX + key, str(value))
        return image

    @classmethod
    def from_sitk(
        cls,
        image: sitk.Image,
        modality: Modality | str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> Volume:
        """Wrap a SimpleITK image; 2D images become a single-slice volume."""
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                "multi-component (vector/RGB) images are not volumes; convert to grey first"
            )
        array = sitk.GetArrayFromImage(image)
        spacing, origin, direction = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
        if image.GetDimension() == 2:
            array = array[None]
            spacing = (*spacing, 1.0)
            origin = (*origin, 0.0)
            d = direction
            direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        elif image.GetDimension() != 3:
            raise ValueError(f"expected a 2D or 3D image, got {image.GetDimension()}D")
        stored: dict[str, str] = {}
        stored_modality = None
        for key in image.GetMetaDataKeys():
            if key == _MODALITY_KEY:
                stored_modality = image.GetMetaData(key)
            elif key.startswith(_META_PREFIX):
                stored[key[len(_META_PREFIX) :]] = image.GetMetaData(key)
        stored.update(meta or {})
        if modality is None:
            modality = stored_modality or Modality.UNKNOWN
        return cls(
            array=array,
            geometry=Geometry(spacing=spacing, origin=origin, direction=direction),
            modality=Modality.parse(modality),
            meta=stored,
        )
