"""Write synthetic cases as CHAOS does: one DICOM file per slice plus one PNG mask per slice.

Layout and names follow the CHAOS training set::

    Train_Sets/CT/<id>/DICOM_anon/i0000,0000b.dcm ...      Train_Sets/CT/<id>/Ground/liver_GT_000.png ...
    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/InPhase/IMG-<series>-<even instance>.dcm
    Train_Sets/MR/<id>/T1DUAL/DICOM_anon/OutPhase/IMG-<series>-<odd instance>.dcm
    Train_Sets/MR/<id>/T1DUAL/Ground/IMG-<series>-<even instance>.png   (one mask set for both phases)
    Train_Sets/MR/<id>/T2SPIR/DICOM_anon/IMG-<series>-<instance>.dcm
    Train_Sets/MR/<id>/T2SPIR/Ground/IMG-<series>-<instance>.png

The two T1-DUAL echoes are interleaved in one acquisition, so they share the series number in
their file names: the first (opposed-phase, shorter TE) echo takes the odd instance numbers, the
in-phase echo the even ones. Slice order is file-name order and runs head → feet, i.e.
ImagePositionPatient z *decreases* with the file index, as in the CHAOS CT data. All UIDs are
derived from the case seed, so a dataset is reproducible byte for byte.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from organseg.io.volume import Modality
from organseg.organs import CT_LIVER_GREY, LABEL_NAMES, SUBMISSION_GREY
from organseg.synth.case import Case, Series

#: Identifies files written by this generator (a fixed, derived UID; see ``_uid``).
IMPLEMENTATION_VERSION = "ORGANSEG_SYNTH"
MANUFACTURER = "organseg synthetic phantom"


def _uid(*parts: object) -> UID:
    """A deterministic ``2.25.<int>`` UID: a name-based (SHA-1, version 5) UUID of ``parts``.

    ISO/IEC 9834-8 lets any UUID become a UID under the 2.25 root without a registered prefix.
    pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and returns a random
    UUID, so the name-based UUID is built here to keep datasets reproducible.
    """
    name = "organseg-synth/" + "/".join(map(str, parts))
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, name).int}")


IMPLEMENTATION_UID = _uid("implementation", 1)


def _ds(value: float) -> str:
    """A DICOM decimal string (≤16 characters) for ``value``."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{value:.6g}"


# -- file names --------------------------------------------------------------------------------


def ct_dicom_name(k: int) -> str:
    return f"i{k:04d},0000b.dcm"


def ct_mask_name(k: int) -> str:
    return f"liver_GT_{k:03d}.png"


def mr_name(series_number: int, instance: int, suffix: str = ".dcm") -> str:
    return f"IMG-{series_number:04d}-{instance:05d}{suffix}"


# -- DICOM ------------------------------------------------------------------------------------


def _series_template(case: Case, series: Series, study_uid: UID, frame_uid: UID) -> Dataset:
    """Every attribute of the series that does not change from slice to slice."""
    is_ct = series.modality is Modality.CT
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = series.tags.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"])
    ds.SOPClassUID = CTImageStorage if is_ct else MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = case.study_date
    ds.StudyTime = "091500"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = (
        f"09{20 + series.series_number % 40:02d}00"
    )
    ds.AccessionNumber = ""
    ds.Modality = "CT" if is_ct else "MR"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "ABDOMEN" if is_ct else "MR ABDOMEN"
    ds.SeriesDescription = str(series.tags.get("SeriesDescription", ""))
    ds.ManufacturerModelName = "organseg.synth"
    ds.PatientName = f"SYNTH^{case.kind}_{case.index}"
    ds.PatientID = f"SYNTH-{case.kind}-{case.index:03d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = case.patient_sex
    ds.PatientAge = case.patient_age
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = _ds(series.slice_thickness)
    for keyword in (
        "KVP",
        "XRayTubeCurrent",
        "ReconstructionDiameter",
        "ConvolutionKernel",
        "ContrastBolusAgent",
        "ContrastBolusRoute",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "MRAcquisitionType",
        "SequenceName",
        "RepetitionTime",
        "EchoTime",
        "NumberOfAverages",
        "ImagingFrequency",
        "ImagedNucleus",
        "EchoNumbers",
        "MagneticFieldStrength",
        "SpacingBetweenSlices",
        "EchoTrainLength",
        "FlipAngle",
        "ProtocolName",
        "PatientPosition",
    ):
        if keyword in series.tags:
            value = series.tags[keyword]
            if dictionary_VR(keyword) == "DS":
                value = _ds(float(value))  # type: ignore[arg-type]
            setattr(ds, keyword, value)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = _uid(case.seed, "series", series.name)
    ds.StudyID = str(case.index)
    ds.SeriesNumber = series.series_number
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = "synthetic phantom (organseg.synth)"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(series.image.shape[1]), int(series.image.shape[2])
    ds.PixelSpacing = [_ds(series.pixel_spacing[0]), _ds(series.pixel_spacing[1])]
    ds.BitsAllocated = 16
    ds.BitsStored = series.bits_stored
    ds.HighBit = series.bits_stored - 1
    ds.PixelRepresentation = 1 if series.signed else 0
    if "WindowCenter" in series.tags:
        ds.WindowCenter = _ds(float(series.tags["WindowCenter"]))  # type: ignore[arg-type]
        ds.WindowWidth = _ds(float(series.tags["WindowWidth"]))  # type: ignore[arg-type]
    ds.RescaleIntercept = _ds(series.rescale_intercept)
    ds.RescaleSlope = _ds(series.rescale_slope)
    if "RescaleType" in series.tags:
        ds.RescaleType = series.tags["RescaleType"]
    return ds


def write_series(
    folder: Path, case: Case, series: Series, names: list[str], study_uid: UID, frame_uid: UID
) -> list[Path]:
    """One DICOM file per slice of ``series`` (explicit VR little endian, with file meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = _series_template(case, series, study_uid, frame_uid)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    dtype = "<i2" if series.signed else "<u2"
    paths = []
    for k, name in enumerate(names):
        sop_uid = _uid(case.seed, "instance", series.name, k)
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta = meta
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = series.instance_numbers[k]
        position = series.position(k)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(position[2])
        pixels = np.ascontiguousarray(series.image[k], dtype=dtype)
        ds.SmallestImagePixelValue = int(pixels.min())
        ds.LargestImagePixelValue = int(pixels.max())
        ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = (
            "SS" if series.signed else "US"
        )
        ds.PixelData = pixels.tobytes()
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# -- PNG masks --------------------------------------------------------------------------------


def write_masks(folder: Path, labels: np.ndarray, names: list[str], ct: bool) -> list[Path]:
    """CHAOS ground truth PNGs: CT 1-bit liver masks (0/255 grey), MR 8-bit grey organ levels."""
    folder.mkdir(parents=True, exist_ok=True)
    if ct:
        grey = np.where(labels == 1, CT_LIVER_GREY, 0).astype(np.uint8)
    else:
        table = np.zeros(256, dtype=np.uint8)
        for label, organ in LABEL_NAMES.items():
            table[label] = SUBMISSION_GREY[organ]
        grey = table[labels]
    paths = []
    for k, name in enumerate(names):
        image = Image.fromarray(grey[k], mode="L")
        if ct:  # the CHAOS CT ground truth is stored as 1-bit PNG
            image = image.convert("1")
        path = folder / name
        image.save(path, format="PNG")
        paths.append(path)
    return paths


# -- cases ------------------------------------------------------------------------------------


def write_case(root: Path, case: Case) -> Path:
    """Write ``case`` under ``root`` (the ``Train_Sets`` folder); returns the case folder."""
    study_uid = _uid(case.seed, "study")
    frame_uid = _uid(case.seed, "frame-of-reference")
    if case.kind == "CT":
        folder = root / "CT" / str(case.index)
        (series,) = case.series
        n = series.image.shape[0]
        write_series(
            folder / "DICOM_anon",
            case,
            series,
            [ct_dicom_name(k) for k in range(n)],
            study_uid,
            frame_uid,
        )
        write_masks(folder / "Ground", series.labels, [ct_mask_name(k) for k in range(n)], ct=True)
        return folder

    folder = root / "MR" / str(case.index)
    by_name = {s.name: s for s in case.series}
    t1_in, t1_out, t2 = by_name["T1-in"], by_name["T1-out"], by_name["T2SPIR"]
    for series, sub in ((t1_in, "InPhase"), (t1_out, "OutPhase")):
        names = [mr_name(series.series_number, i) for i in series.instance_numbers]
        write_series(
            folder / "T1DUAL" / "DICOM_anon" / sub, case, series, names, study_uid, frame_uid
        )
    t1_masks = [mr_name(t1_in.series_number, i, ".png") for i in t1_in.instance_numbers]
    write_masks(folder / "T1DUAL" / "Ground", t1_in.labels, t1_masks, ct=False)
    t2_names = [mr_name(t2.series_number, i) for i in t2.instance_numbers]
    write_series(folder / "T2SPIR" / "DICOM_anon", case, t2, t2_names, study_uid, frame_uid)
    t2_masks = [mr_name(t2.series_number, i, ".png") for i in t2.instance_numbers]
    write_masks(folder / "T2SPIR" / "Ground", t2.labels, t2_masks, ct=False)
    return folder
