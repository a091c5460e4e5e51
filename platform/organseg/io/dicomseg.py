"""DICOM-SEG export: a predicted label map as a Segmentation object a PACS viewer opens over its source.

Label slice ``z`` belongs to the ``z``-th file of the source series in file-name order (the CHAOS rule,
the order :func:`organseg.io.dicom.read_dicom_series` stacks), so the source datasets are handed to
highdicom in exactly that order; highdicom then records, for every frame it writes, the
SOPInstanceUID and ImagePositionPatient of the slice that frame was cut from.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from organseg import __version__
from organseg.errors import DataError, DataWarning
from organseg.io.dicom import list_dicom_files
from organseg.io.volume import Volume
from organseg.organs import LABEL_NAMES, ORGAN_COLOURS, ORGAN_LABELS

MANUFACTURER = "organseg"
SERIES_DESCRIPTION = "organseg segmentation"
#: Offset added to the source SeriesNumber so the SEG series sorts after its image series.
SERIES_NUMBER_OFFSET = 1000

#: Attributes highdicom copies from the first source image into the Patient/Study modules. All are
#: type 2 (may be empty, must be present); anonymised data such as CHAOS often drops or blanks them.
_TYPE2_DEFAULTS: dict[str, object] = {
    "PatientName": "",
    "PatientID": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "AccessionNumber": "",
    "StudyID": "",
    "StudyDate": "",
    "StudyTime": "",
    "ReferringPhysicianName": "",
}
#: Type-1 attributes without which the SEG cannot point at its source; these are not invented.
_REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)


def _segment_description(number: int, organ: str):
    """SNOMED-coded description of one organ (kidneys: Kidney + laterality modifier, DICOM's way)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    types = {"liver": codes.SCT.Liver, "spleen": codes.SCT.Spleen}
    laterality = {"right_kidney": codes.SCT.Right, "left_kidney": codes.SCT.Left}
    property_type = types.get(organ, codes.SCT.Kidney)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=organ.replace("_", " ").capitalize(),  # "Right kidney"
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="organseg",
            family=codes.DCM.ArtificialIntelligence,
            version=__version__,
        ),
        display_color=hd.color.CIELabColor.from_rgb(*ORGAN_COLOURS[organ]),
    )
    if organ in laterality:
        modifier = hd.sr.CodedConcept.from_code(laterality[organ])
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def source_series_folder(source_dicom: Path) -> Path:
    """The series folder ``source_dicom`` stands for: itself, or a CHAOS case's ``DICOM_anon``."""
    source_dicom = Path(source_dicom)
    if (source_dicom / "DICOM_anon").is_dir():
        source_dicom = source_dicom / "DICOM_anon"
    return source_dicom


def read_source_datasets(folder: Path) -> list[Dataset]:
    """Headers of the series in file-name order (the same files, skipped or not, as the reader uses)."""
    headers = list_dicom_files(folder)
    datasets = []
    for header in headers:
        try:
            datasets.append(pydicom.dcmread(header.path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several types for damaged files
            raise DataError(f"{header.path}: cannot read DICOM header ({exc})") from None
    return datasets


def _prepare_sources(datasets: list[Dataset], folder: Path) -> list[Dataset]:
    """Copies of the source headers with missing type-2 attributes filled as empty values."""
    prepared = []
    filled: set[str] = set()
    for ds in datasets:
        missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "")]
        if missing:
            raise DataError(
                f"{folder}: {Path(ds.filename).name if ds.filename else 'a file'} lacks "
                f"{', '.join(missing)}; a DICOM-SEG cannot reference it"
            )
        ds = ds.copy()
        for keyword, default in _TYPE2_DEFAULTS.items():
            if keyword not in ds:
                setattr(ds, keyword, default)
                filled.add(keyword)
        prepared.append(ds)
    if filled:
        warnings.warn(
            DataWarning(f"{folder}: no {', '.join(sorted(filled))} in the source; left empty"),
            stacklevel=3,
        )
    return prepared


def build_dicom_seg(labels: Volume, datasets: list[Dataset], folder: Path):
    """A BINARY ``highdicom.seg.Segmentation`` of ``labels`` over ``datasets`` (file-name order)."""
    import highdicom as hd

    array = np.asarray(labels.array)
    first = datasets[0]
    rows, columns = int(first.Rows), int(first.Columns)
    if array.shape != (len(datasets), rows, columns):
        z, y, x = array.shape
        raise DataError(
            f"{folder}: the source series has {len(datasets)} slices of {columns}x{rows} pixels "
            f"but the labels have {z} slices of {x}x{y}; export needs the series they came from"
        )
    present = [int(v) for v in np.unique(array) if v != 0]
    unknown = [v for v in present if v not in LABEL_NAMES]
    if unknown:
        raise DataError(
            f"labels hold values {unknown} that are no organ id (valid: {dict(ORGAN_LABELS)})"
        )
    organs = [LABEL_NAMES[v] for v in present]
    if not organs:  # an empty prediction still gets a valid (all-empty) SEG for its organs
        claimed = [o for o in labels.meta.get("organs", "").split(",") if o in ORGAN_LABELS]
        organs = claimed or ["liver"]
    descriptions = [_segment_description(n, o) for n, o in enumerate(organs, start=1)]
    # (frames, rows, columns, segments) booleans: segment numbers need not equal organ label ids.
    masks = np.stack([array == ORGAN_LABELS[o] for o in organs], axis=-1)
    series_number = int(first.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    sources = _prepare_sources(datasets, folder)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=masks.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=__version__,
            device_serial_number="0",
            content_description="organseg prediction",
            content_label="ORGANSEG",
            series_description=SERIES_DESCRIPTION,
            omit_empty_frames=bool(present),
        )
    except ValueError as exc:  # highdicom's checks on the source (mixed series, orientation, ...)
        raise DataError(f"{folder}: cannot build a DICOM-SEG from this series ({exc})") from None
    return seg


def write_dicom_seg(labels: Volume, source_dicom: Path, out: Path) -> Path:
    """Write ``labels`` as a DICOM-SEG over the series in ``source_dicom``; returns ``out``.

    The file appears atomically (written beside ``out``, then renamed), so a viewer or a watcher
    never picks up half an object.
    """
    folder = source_series_folder(Path(source_dicom))
    if not folder.is_dir():
        raise DataError(f"{folder}: not a DICOM series folder")
    seg = build_dicom_seg(labels, read_source_datasets(folder), folder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        seg.save_as(tmp, enforce_file_format=True)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
