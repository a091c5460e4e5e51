"""Reading and writing images, masks and CHAOS datasets (all through SimpleITK)."""

from organseg.io.chaos import CaseRef, ChaosCase, discover_cases, iter_cases, load_case
from organseg.io.dicom import SLICE_ORDERS, read_dicom_geometry, read_dicom_series
from organseg.io.files import read_volume_file, write_volume_file
from organseg.io.png import read_mask_series, read_png_series, write_png_series
from organseg.io.readers import read_any
from organseg.io.volume import Geometry, Modality, Volume

__all__ = [
    "SLICE_ORDERS",
    "CaseRef",
    "ChaosCase",
    "Geometry",
    "Modality",
    "Volume",
    "discover_cases",
    "iter_cases",
    "load_case",
    "read_any",
    "read_dicom_geometry",
    "read_dicom_series",
    "read_mask_series",
    "read_png_series",
    "read_volume_file",
    "write_png_series",
    "write_volume_file",
]
