"""Reading and writing images, masks and CHAOS datasets (all through SimpleITK)."""

from organseg.io.volume import Geometry, Modality, Volume

__all__ = ["Geometry", "Modality", "Volume"]
