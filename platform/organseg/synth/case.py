"""Synthetic CHAOS cases: a random patient plus the acquisitions a scanner would make of it.

A case holds one series (CT) or three (MR: T1-DUAL in-phase, opposed-phase and T2-SPIR) with
stored pixel values, label maps, geometry and the sequence facts that go into the DICOM headers.
Everything is drawn from named random streams of the case seed, so a case is reproducible on its
own: case 2 of a dataset is the same whether the dataset holds 2 cases or 20.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from organseg.errors import ConfigError
from organseg.io.volume import Modality
from organseg.synth.phantom import (
    add_ct_table,
    build_tissue_map,
    named_rng,
    render_ct,
    render_t1_dual,
    render_t2_spir,
    sample_anatomy,
    sample_ct_contrast,
    sample_mr_contrast,
)

Kind = Literal["CT", "MR"]

#: Reference field of view (mm) of the body model; the MR body shrinks in its wider field of view.
_REFERENCE_FOV_MM = 370.0
#: Stored CT values are HU + 1024, the usual scanner convention (RescaleIntercept −1024).
CT_INTERCEPT = -1024
_STORED_MAX = 4095  # 12 significant bits


@dataclass
class Series:
    """One acquired image series and its ground truth, ready for the DICOM writer.

    ``image`` holds the stored pixel values ``[z, y, x]`` (slice 0 = first file = most cranial);
    real-world values are ``stored * rescale_slope + rescale_intercept``.
    """

    name: str  # "CT", "T1-in", "T1-out", "T2SPIR"
    modality: Modality
    image: np.ndarray
    labels: np.ndarray
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) as in DICOM PixelSpacing
    slice_step: float  # mm between consecutive files; positions run head → feet
    slice_thickness: float
    first_position: tuple[float, float, float]  # ImagePositionPatient of the first file
    series_number: int
    instance_numbers: list[int]
    rescale_intercept: float = 0.0
    rescale_slope: float = 1.0
    signed: bool = False
    bits_stored: int = 12
    tags: dict[str, object] = field(default_factory=dict)  # sequence-specific DICOM keywords

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(x, y, z)`` voxel spacing in mm (SimpleITK order)."""
        return (self.pixel_spacing[1], self.pixel_spacing[0], self.slice_step)

    def position(self, k: int) -> tuple[float, float, float]:
        """ImagePositionPatient of file ``k``: z decreases with the file index (head → feet)."""
        x0, y0, z0 = self.first_position
        return (x0, y0, round(z0 - k * self.slice_step, 4))

    def real_values(self) -> np.ndarray:
        """HU for CT, scanner units for MR (float32)."""
        return self.image.astype(np.float32) * self.rescale_slope + self.rescale_intercept


@dataclass
class Case:
    kind: Kind
    index: int  # case id, 1-based (the folder name)
    seed: int
    series: list[Series]
    study_date: str
    patient_age: str
    patient_sex: str


def case_seed(seed: int, kind: Kind, index: int) -> int:
    """The seed of case ``index`` of ``kind`` in a dataset made with ``seed``."""
    ss = np.random.SeedSequence([seed % 2**64, zlib.crc32(kind.encode()), index])
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def default_slices(kind: Kind, size: int) -> int:
    """Slices per series when not given: CT ~size/4 (32 at 128²), MR ~size·3/16 (24 at 128²)."""
    if kind == "CT":
        return max(8, round(size / 4))
    return max(8, round(size * 3 / 16))


def _patient(rng: np.random.Generator) -> tuple[str, str, str]:
    base = np.datetime64("2016-01-01") + int(rng.integers(0, 3 * 365))
    date = str(base).replace("-", "")
    age = f"{int(rng.integers(25, 80)):03d}Y"
    sex = str(rng.choice(["F", "M"]))
    return date, age, sex


def _to_stored(values: np.ndarray, intercept: float, signed: bool) -> np.ndarray:
    stored = np.rint(values - intercept)
    if signed:
        return np.clip(stored, -32768, 32767).astype(np.int16)
    return np.clip(stored, 0, _STORED_MAX).astype(np.uint16)


def make_ct_case(size: int, slices: int, seed: int, index: int = 1) -> Case:
    """A contrast-enhanced (portal-venous) abdominal CT with its liver ground truth."""
    acq = named_rng(seed, "acquisition")
    diameter = float(np.round(acq.uniform(335.0, 405.0)))  # reconstruction diameter, mm
    pixel = diameter / size
    step = float(acq.choice([2.0, 2.5, 3.0]))
    thickness = float(acq.choice([step, round(step * 1.6, 1)]))
    x0 = round(-diameter / 2 + float(acq.uniform(-8, 8)), 2)
    y0 = round(-diameter / 2 + float(acq.uniform(-25, 35)), 2)
    z0 = round(float(acq.uniform(1450, 1800)) * 2) / 2
    series_number = int(acq.integers(2, 7))
    signed = index % 2 == 0  # alternate unsigned/signed storage so readers meet both
    date, age, sex = _patient(acq)

    anatomy = sample_anatomy(seed)
    tm = build_tissue_map(anatomy, (slices, size, size))
    add_ct_table(tm, anatomy)
    hu = render_ct(
        tm, sample_ct_contrast(named_rng(seed, "ct-contrast")), named_rng(seed, "ct-noise")
    )
    series = Series(
        name="CT",
        modality=Modality.CT,
        image=_to_stored(hu, CT_INTERCEPT, signed),
        labels=tm.labels,
        pixel_spacing=(pixel, pixel),
        slice_step=step,
        slice_thickness=thickness,
        first_position=(x0, y0, z0),
        series_number=series_number,
        instance_numbers=list(range(1, slices + 1)),
        rescale_intercept=float(CT_INTERCEPT),
        signed=signed,
        bits_stored=16 if signed else 12,
        tags={
            "SeriesDescription": str(
                acq.choice(["ABDOMEN PV 2.0 B30f", "Abdomen portal venous", "PORTAL VENOSA"])
            ),
            "ProtocolName": "ABDOMEN PV",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "KVP": 120,
            "XRayTubeCurrent": int(acq.integers(150, 320)),
            "ReconstructionDiameter": diameter,
            "ConvolutionKernel": "B30f",
            "ContrastBolusAgent": "CONTRAST",
            "ContrastBolusRoute": "IV",
            "WindowCenter": 50,
            "WindowWidth": 400,
            "RescaleType": "HU",
            "PatientPosition": "FFS",
        },
    )
    return Case("CT", index, seed, [series], date, age, sex)


def make_mr_case(size: int, slices: int, seed: int, index: int = 1) -> Case:
    """A 1.5 T abdominal MR: T1-DUAL (in/opposed phase, one ground truth) and T2-SPIR."""
    acq = named_rng(seed, "acquisition")
    fov = float(np.round(256 * acq.uniform(1.5, 1.9)))
    pixel = fov / size
    x0 = round(-fov / 2 + float(acq.uniform(-10, 10)), 2)
    y0 = round(-fov / 2 + float(acq.uniform(-20, 20)), 2)

    def slab() -> tuple[float, float]:
        step = round(float(acq.uniform(5.5, 9.0)), 1)
        gap = float(acq.choice([0.0, 0.5, 1.0]))
        return step, max(5.0, round(step - gap, 1))

    t1_step, t1_thick = slab()
    _, t2_thick = slab()
    # both series voxelise the anatomy over their own slab, so they share the slice step: T2 then
    # shows the same anatomy shifted by its table offset (the patient moved between the series),
    # plus the breath-hold difference -- what a rigid T2 -> T1 registration has to undo
    t2_step = t1_step
    z0 = round(float(acq.uniform(-40, 80)), 1)
    t2_z0 = round(z0 + float(acq.uniform(-8, 8)), 1)
    t2_number = int(acq.integers(2, 40))
    t1_number = t2_number + int(acq.integers(1, 5))
    te_in = round(float(acq.uniform(4.4, 4.6)), 2)
    te_out = round(float(acq.uniform(2.2, 2.3)), 2)
    tr_t1 = round(float(acq.uniform(140, 200)), 1)
    flip_t1 = int(acq.choice([70, 75, 80]))
    te_t2 = round(float(acq.uniform(70, 90)), 1)
    tr_t2 = round(float(acq.uniform(1500, 2200)), 0)
    breath = float(acq.uniform(0.015, 0.05))
    date, age, sex = _patient(acq)

    anatomy = sample_anatomy(seed, fov_fill=_REFERENCE_FOV_MM / fov)
    contrast = sample_mr_contrast(named_rng(seed, "mr-contrast"))
    shape = (slices, size, size)
    tm1 = build_tissue_map(anatomy, shape)
    in_phase, out_phase = render_t1_dual(tm1, contrast, named_rng(seed, "t1-noise"))
    tm2 = build_tissue_map(anatomy, shape, breath=breath)
    t2 = render_t2_spir(tm2, contrast, named_rng(seed, "t2-noise"))

    common: dict[str, object] = {
        "MagneticFieldStrength": 1.5,
        "ImagingFrequency": 63.897,
        "ImagedNucleus": "1H",
        "MRAcquisitionType": "2D",
        "NumberOfAverages": 1,
        "PatientPosition": "HFS",
        "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
    }
    t1_common = {
        **common,
        "ProtocolName": "T1DUAL",
        "ScanningSequence": "GR",
        "SequenceVariant": ["SP", "OSP"],
        "ScanOptions": "",
        "SequenceName": "T1FFE",
        "RepetitionTime": tr_t1,
        "FlipAngle": flip_t1,
        "EchoTrainLength": 2,
    }
    positions = (x0, y0, z0)

    def t1_series(
        modality: Modality, image: np.ndarray, echo: int, te: float, phase: str
    ) -> Series:
        """One of the two interleaved T1-DUAL echoes (echo 1 out-phase, echo 2 in-phase)."""
        return Series(
            name="T1-in" if modality is Modality.MR_T1_IN else "T1-out",
            modality=modality,
            image=_to_stored(image, 0.0, False),
            labels=tm1.labels,
            pixel_spacing=(pixel, pixel),
            slice_step=t1_step,
            slice_thickness=t1_thick,
            first_position=positions,
            series_number=t1_number,
            instance_numbers=[2 * k + echo for k in range(slices)],
            tags={
                **t1_common,
                "SeriesDescription": f"T1DUAL {phase}",
                "EchoTime": te,
                "EchoNumbers": echo,
            },
        )

    t1_in = t1_series(Modality.MR_T1_IN, in_phase, 2, te_in, "in-phase")
    t1_out = t1_series(Modality.MR_T1_OUT, out_phase, 1, te_out, "out-phase")
    t2_series = Series(
        name="T2SPIR",
        modality=Modality.MR_T2SPIR,
        image=_to_stored(t2, 0.0, False),
        labels=tm2.labels,
        pixel_spacing=(pixel, pixel),
        slice_step=t2_step,
        slice_thickness=t2_thick,
        first_position=(x0, y0, t2_z0),
        series_number=t2_number,
        instance_numbers=[k + 1 for k in range(slices)],
        tags={
            **common,
            "ImageType": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"],
            "ProtocolName": "T2SPIR",
            "SeriesDescription": "T2SPIR",
            "ScanningSequence": "SE",
            "SequenceVariant": ["SK", "SP"],
            "ScanOptions": "FS",
            "SequenceName": "T2TSE",
            "EchoTime": te_t2,
            "EchoNumbers": 1,
            "RepetitionTime": tr_t2,
            "FlipAngle": 90,
            "EchoTrainLength": int(acq.integers(16, 33)),
        },
    )
    for s in (t1_in, t1_out, t2_series):
        s.tags["SpacingBetweenSlices"] = s.slice_step
    return Case("MR", index, seed, [t1_in, t1_out, t2_series], date, age, sex)


def make_case(kind: Kind, size: int, slices: int | None, seed: int, index: int = 1) -> Case:
    """One synthetic patient of ``kind`` (CT, or MR with T1-DUAL in/out and T2-SPIR): image series with
    their label maps and DICOM tags; ``slices`` defaults to the kind's usual count.
    """
    slices = default_slices(kind, size) if slices is None else slices
    if kind == "CT":
        return make_ct_case(size, slices, seed, index)
    return make_mr_case(size, slices, seed, index)


_KIND_OF_SERIES = {
    Modality.CT: ("CT", "CT"),
    Modality.MR_T1_IN: ("MR", "T1-in"),
    Modality.MR_T1_OUT: ("MR", "T1-out"),
    Modality.MR_T2SPIR: ("MR", "T2SPIR"),
}


def make_phantom(
    kind: Modality | str, size: int = 128, slices: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One synthetic image without writing files: ``(image, labels, spacing)``.

    ``kind`` is a modality (``"CT"``, ``"MR-T1-in"``, ``"MR-T1-out"``, ``"MR-T2SPIR"`` or an alias such
    as ``"t2spir"``). ``image`` is ``[z, y, x]`` with slice 0 the most cranial: int16 Hounsfield
    units for CT, uint16 scanner units for MR. ``labels`` holds organ ids (liver 1, right kidney 2,
    left kidney 3, spleen 4; CT cases carry all four although CHAOS CT ground truth is liver only).
    ``spacing`` is ``(x, y, z)`` in mm. The same arguments give the same arrays.
    """
    modality = Modality.parse(kind)
    if modality not in _KIND_OF_SERIES:
        valid = [m.value for m in _KIND_OF_SERIES]
        raise ConfigError(f"no phantom for modality {modality.value!r}; expected one of {valid}")
    case_kind, name = _KIND_OF_SERIES[modality]
    case = make_case(case_kind, size, slices, seed)  # type: ignore[arg-type]
    series = next(s for s in case.series if s.name == name)
    image = series.real_values()
    image = image.astype(np.int16) if modality is Modality.CT else series.image
    return image, series.labels, series.spacing
