"""DICOM-SEG export: a predicted label map as a Segmentation object a PACS viewer opens over its source.

Label slice ``z`` belongs to the source slice lying at that slice's position: the source datasets are
matched to the label grid by ImagePositionPatient (so geometry-ordered and CHAOS file-name-ordered
predictions both export correctly) and handed to highdicom in label order. Labels without a geometry
that places the source slices (a bare PNG series) pair with the files in file-name order, the CHAOS
rule; highdicom then records, for
every frame it writes, the SOPInstanceUID and ImagePositionPatient of the slice that frame was cut from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from organseg import __version__
from organseg.errors import DataError, DataWarning
from organseg.io.atomic import atomic_path
from organseg.io.dicom import list_dicom_files
from organseg.io.volume import Volume
from organseg.labels import Code, Label, LabelSet, chaos_label_set, normalise_name
from organseg.organs import LABEL_NAMES, ORGAN_LABELS

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


def segment_label_text(name: str) -> str:
    """The SegmentLabel written for a label name: ``right_kidney`` → ``Right kidney`` (LO: 64 chars)."""
    text = name.replace("_", " ")
    return (text[:1].upper() + text[1:])[:64]


def segment_description(number: int, label: Label):
    """Coded description of one label's segment: its category and property type, and for paired
    organs the laterality as a modifier of the type (Kidney + Right, DICOM's way)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    def concept(code: Code) -> hd.sr.CodedConcept:
        # highdicom writes values over 16 characters as LongCodeValue, as DICOM requires
        return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)

    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment_label_text(label.name),
        segmented_property_category=concept(label.code.category),
        segmented_property_type=concept(label.code.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="organseg",
            family=codes.DCM.ArtificialIntelligence,
            version=__version__,
        ),
        display_color=hd.color.CIELabColor.from_rgb(*label.colour),
    )
    if label.code.laterality is not None:
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [concept(label.code.laterality)]
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


def datasets_in_label_order(datasets: list[Dataset], labels: Volume) -> list[Dataset] | None:
    """The source datasets reordered so that dataset ``z`` lies at label slice ``z``'s position.

    None when the labels' geometry does not place every source slice on its own label slice (labels
    without geometry, e.g. a CHAOS PNG series): those pair with the files in file-name order.
    """
    geometry = labels.geometry
    z_axis = geometry.direction_matrix[:, 2]
    dz = geometry.spacing[2]
    origin = np.asarray(geometry.origin)
    slot: dict[int, Dataset] = {}
    for ds in datasets:
        try:
            position = np.array([float(v) for v in ds.ImagePositionPatient])
        except (AttributeError, TypeError, ValueError):
            return None
        index = float((position - origin) @ z_axis) / dz
        k = round(index)
        if abs(index - k) > 0.05 or not 0 <= k < labels.shape[0] or k in slot:
            return None
        slot[k] = ds
    return [slot[k] for k in range(labels.shape[0])] if len(slot) == labels.shape[0] else None


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


def _chaos_segments(labels: Volume, present: list[int]) -> list[Label]:
    """The CHAOS organs among the ``present`` values (none: the organs the prediction was asked for)."""
    unknown = [v for v in present if v not in LABEL_NAMES]
    if unknown:
        raise DataError(
            f"labels hold values {unknown} that are no organ id (valid: {dict(ORGAN_LABELS)})"
        )
    organs = [LABEL_NAMES[v] for v in present]
    if not organs:  # an empty prediction still gets a valid (all-empty) SEG for its organs
        claimed = [o for o in labels.meta.get("organs", "").split(",") if o in ORGAN_LABELS]
        organs = claimed or ["liver"]
    chaos = chaos_label_set()
    return [chaos[o] for o in organs]


def _label_set_segments(present: list[int], label_set: LabelSet) -> list[Label]:
    """Every label of the set, in its order: a label the prediction does not hold is an empty
    segment, which tells a viewer it was looked for and not found."""
    known = {v for lb in label_set for v in (lb.region or (lb.value,))}
    unknown = [v for v in present if v not in known]
    if unknown:
        raise DataError(
            f"labels hold values {unknown} that are no label of "
            f"{label_set.name or 'the label set'} (valid: "
            f"{ {lb.name: lb.value for lb in label_set} })"
        )
    return list(label_set)


def build_dicom_seg(
    labels: Volume, datasets: list[Dataset], folder: Path, label_set: LabelSet | None = None
):
    """A BINARY ``highdicom.seg.Segmentation`` of ``labels`` over ``datasets`` (file-name order).

    Without ``label_set`` the values are CHAOS organ ids and only the organs present get a segment
    (as organseg has always written them); with one, every label of the set gets a segment coded
    from the set.
    """
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
    segments = (
        _chaos_segments(labels, present)
        if label_set is None
        else _label_set_segments(present, label_set)
    )
    descriptions = [segment_description(n, lb) for n, lb in enumerate(segments, start=1)]
    # (frames, rows, columns, segments) booleans: segment numbers need not equal label values.
    masks = np.stack([_mask(array, lb) for lb in segments], axis=-1)
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


def _mask(array: np.ndarray, label: Label) -> np.ndarray:
    values = label.region if label.region is not None else (label.value,)
    return np.isin(array, values) if len(values) > 1 else array == values[0]


def write_dicom_seg(
    labels: Volume, source_dicom: Path, out: Path, label_set: LabelSet | None = None
) -> Path:
    """Write ``labels`` as a DICOM-SEG over the series in ``source_dicom``; returns ``out``.

    ``label_set`` names and codes the segments (default: the CHAOS organs present).

    The file appears atomically (written beside ``out``, then renamed), so a viewer or a watcher
    never picks up half an object.
    """
    folder = source_series_folder(Path(source_dicom))
    if not folder.is_dir():
        raise DataError(f"{folder}: not a DICOM series folder")
    datasets = read_source_datasets(folder)
    datasets = datasets_in_label_order(datasets, labels) or datasets
    seg = build_dicom_seg(labels, datasets, folder, label_set)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


#: SOP Class UID of the DICOM Segmentation Storage object.
SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
_PROPERTY_ORGANS = {"10200004": "liver", "78961009": "spleen"}
_KIDNEY, _LATERALITY = "64033007", {"24028007": "right_kidney", "7771000": "left_kidney"}


def is_dicom_seg(path: Path) -> bool:
    """True when ``path`` is a DICOM file whose SOP class is Segmentation (header only)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM at all: pydicom raises several types
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID


def _segment_organ(description: Dataset) -> str | None:
    """The organ a segment stands for: its label (as organseg writes it), else its SNOMED codes."""
    label = str(description.get("SegmentLabel", "")).strip().lower().replace(" ", "_")
    if label in ORGAN_LABELS:
        return label
    for item in description.get("SegmentedPropertyTypeCodeSequence", []):
        code = str(item.get("CodeValue", ""))
        if code in _PROPERTY_ORGANS:
            return _PROPERTY_ORGANS[code]
        if code == _KIDNEY:
            for modifier in item.get("SegmentedPropertyTypeModifierCodeSequence", []):
                side = _LATERALITY.get(str(modifier.get("CodeValue", "")))
                if side:
                    return side
    return None


def _code_of(item: Dataset) -> tuple[str, str]:
    """``(value, scheme)`` of a code item (long values live in LongCodeValue or URNCodeValue)."""
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    return str(value), str(item.get("CodingSchemeDesignator", ""))


def _segment_label_of(description: Dataset, label_set: LabelSet) -> Label | None:
    """The label a segment stands for: by its SegmentLabel, else by its property type code and
    laterality (a code without the laterality a label has, or with another, is no match)."""
    text = normalise_name(str(description.get("SegmentLabel", "")))
    for label in label_set:
        if text and text == normalise_name(label.name):
            return label
    for item in description.get("SegmentedPropertyTypeCodeSequence", [])[:1]:
        modifiers = item.get("SegmentedPropertyTypeModifierCodeSequence", [])
        side = _code_of(modifiers[0]) if modifiers else None
        matches = [
            lb
            for lb in label_set
            if _code_of(item) == (lb.code.type.value, lb.code.type.scheme)
            and side
            == (
                None
                if lb.code.laterality is None
                else (lb.code.laterality.value, lb.code.laterality.scheme)
            )
        ]
        if len(matches) == 1:
            return matches[0]
    return None


def _frame_item(ds: Dataset, i: int, name: str) -> Dataset | None:
    """Functional-group item ``name`` of frame ``i``: per-frame, else shared."""
    for groups in (
        ds.get("PerFrameFunctionalGroupsSequence", [])[i : i + 1],
        ds.get("SharedFunctionalGroupsSequence", [])[:1],
    ):
        for group in groups:
            if name in group and len(group[name].value):
                return group[name].value[0]
    return None


def read_dicom_seg(
    path: Path,
    geometry,
    shape: tuple[int, int, int],
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    label_set: LabelSet | None = None,
) -> np.ndarray:
    """Organ label ids (uint8, ``shape``) of a DICOM-SEG on a reference series' grid; with
    ``label_set``, that set's label values (uint16 when a value exceeds 255).

    The SEG must reference the series (``series_uid``) or share its frame of reference; each frame
    is placed by its ImagePositionPatient on ``geometry``'s slices (so the file order of either
    series does not matter), and must lie on the grid in-plane (no resampling: a mask drawn on
    another grid is refused, not guessed). Segments map to organs by label or SNOMED code;
    FRACTIONAL segments are cut at one half. With ``label_set`` segments map to its labels by
    SegmentLabel, else by property type code and laterality; a segment that matches none is refused.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom/pydicom raise several types for foreign files
        raise DataError(f"{path}: not a readable DICOM-SEG ({exc})") from None
    referenced = {
        str(item.get("SeriesInstanceUID", "")) for item in seg.get("ReferencedSeriesSequence", [])
    }
    same_series = bool(series_uid) and series_uid in referenced
    same_frame = bool(frame_of_reference_uid) and (
        str(seg.get("FrameOfReferenceUID", "")) == frame_of_reference_uid
    )
    if (series_uid or frame_of_reference_uid) and not (same_series or same_frame):
        raise DataError(
            f"{path}: the DICOM-SEG references another series and frame of reference than the "
            "reference's DICOM series; pass --dicom with the series it was made from"
        )
    values: dict[int, int] = {}
    for description in seg.SegmentSequence:
        number = int(description.SegmentNumber)
        if label_set is not None:
            label = _segment_label_of(description, label_set)
            if label is None:
                raise DataError(
                    f"{path}: segment {number} ({description.get('SegmentLabel', 'no label')!r}) "
                    f"matches no label of {label_set.name or 'the label set'} by name or code "
                    f"(labels: {list(label_set.names)})"
                )
            values[number] = label.value
            continue
        organ = _segment_organ(description)
        if organ is None:
            raise DataError(
                f"{path}: segment {description.SegmentNumber} "
                f"({description.get('SegmentLabel', 'no label')!r}) is none of {list(ORGAN_LABELS)}"
            )
        values[number] = ORGAN_LABELS[organ]
    depth, rows, columns = shape
    if (int(seg.Rows), int(seg.Columns)) != (rows, columns):
        raise DataError(
            f"{path}: frames are {seg.Columns}x{seg.Rows} pixels, the reference slices "
            f"{columns}x{rows}"
        )
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if seg.SegmentationType == "FRACTIONAL":
        pixels = pixels * 2 >= int(seg.get("MaximumFractionalValue", 255))
    matrix = geometry.direction_matrix
    origin = np.asarray(geometry.origin)
    spacing = np.asarray(geometry.spacing)
    dtype = np.uint8 if max(values.values(), default=0) <= 255 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    for i in range(pixels.shape[0]):
        identification = _frame_item(seg, i, "SegmentIdentificationSequence")
        position = _frame_item(seg, i, "PlanePositionSequence")
        if identification is None or position is None:
            raise DataError(f"{path}: frame {i + 1} lacks its segment number or position")
        offset = np.asarray([float(v) for v in position.ImagePositionPatient]) - origin
        index = matrix.T @ offset / spacing  # (x, y, z) in voxels on the reference grid
        z = int(np.rint(index[2]))
        if np.abs(index[:2]).max() > 0.05 or abs(index[2] - z) > 0.05 or not 0 <= z < depth:
            raise DataError(
                f"{path}: frame {i + 1} at {np.round(offset + origin, 2).tolist()} mm lies on no "
                "slice of the reference series; the SEG was made on another grid"
            )
        labels[z][pixels[i].astype(bool)] = values[int(identification.ReferencedSegmentNumber)]
    return labels
