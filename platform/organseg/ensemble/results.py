"""What a prediction becomes for a PACS (the DICOM node and the STOW-RS route alike): a DICOM-SEG over
the source series and, optionally, colour overlays as Secondary Capture images (many PACS viewers
cannot display DICOM-SEG but all display SC)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from organseg import __version__
from organseg.ensemble.prediction import Prediction
from organseg.errors import DataError
from organseg.io.dicomseg import MANUFACTURER, SERIES_NUMBER_OFFSET, build_dicom_seg
from organseg.io.volume import Volume
from organseg.labels import LabelSet

OUTPUTS = ("seg", "overlay-sc")
#: Overlay series number: after the SEG's (source + 1000).
OVERLAY_SERIES_OFFSET = SERIES_NUMBER_OFFSET + 1
MAX_OVERLAY_SLICES = 6


def parse_outputs(text: str) -> tuple[str, ...]:
    """``seg,overlay-sc`` → ("seg", "overlay-sc"); unknown names are a clear error."""
    chosen = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    unknown = [x for x in chosen if x not in OUTPUTS]
    if unknown or not chosen:
        raise DataError(f"--outputs {text!r}: choose from {', '.join(OUTPUTS)}")
    return chosen


def build_results(
    image: Volume,
    prediction: Prediction,
    datasets: list[Dataset],
    label: str,
    outputs: tuple[str, ...] = ("seg",),
) -> list[Dataset]:
    """The result instances for one series; ``datasets`` are the source headers in slice order."""
    results: list[Dataset] = []
    if "seg" in outputs:
        # the model's own label set codes the segments (None: a CHAOS model, the organs present)
        results.append(
            build_dicom_seg(prediction.labels, datasets, Path(label), prediction.label_set)
        )
    if "overlay-sc" in outputs:
        results.extend(build_overlays(image, prediction.labels, datasets, prediction.label_set))
    return results


def build_overlays(
    image: Volume, labels: Volume, datasets: list[Dataset], label_set: LabelSet | None = None
) -> list[Dataset]:
    """Secondary Capture RGB images of the most informative slices, each referencing its source slice;
    ``label_set`` colours the labels (None: CHAOS organ ids)."""
    import highdicom as hd

    from organseg.viz.overlay import _to_grey, choose_slices, display_window, render_slice

    label_array = np.asarray(labels.array)
    window = display_window(image)
    series_uid = hd.UID()
    series_number = int(datasets[0].get("SeriesNumber") or 0) + OVERLAY_SERIES_OFFSET
    images = []
    for number, z in enumerate(choose_slices(label_array, max_slices=MAX_OVERLAY_SLICES), start=1):
        rgb = render_slice(
            _to_grey(np.asarray(image.array[z]), window), label_array[z], label_set=label_set
        )
        source = datasets[z]
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=np.ascontiguousarray(rgb),
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            pixel_spacing=tuple(float(v) for v in source.PixelSpacing),
            patient_orientation=patient_orientation(source),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        )
        sc.SeriesDescription = "organseg overlay"
        sc.SoftwareVersions = __version__
        sc.BurnedInAnnotation = "NO"
        images.append(sc)
    return images


def patient_orientation(ds: Dataset) -> tuple[str, str]:
    """PatientOrientation letters (row, column direction) from ImageOrientationPatient's main axes."""
    cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
    letters = (("R", "L"), ("A", "P"), ("F", "H"))  # patient axes: -x/+x, -y/+y, -z/+z

    def letter(vector: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][int(vector[axis] > 0)]

    return letter(cosines[:3]), letter(cosines[3:])


def to_bytes(dataset: Dataset) -> bytes:
    """A dataset as a DICOM Part-10 file."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))
