"""A synthetic abdominal CT label set beyond CHAOS's four organs, written as nnU-Net or MSD datasets.

The CHAOS CT phantom (:func:`organseg.synth.make_phantom`) is kept as it is and five simple structures
are painted into its free space: stomach, gallbladder, pancreas, aorta and inferior vena cava, placed
relative to the body outline and the phantom's kidneys and liver. Shapes are ellipsoids and
cylinders: enough for tests to exercise a nine-label set end to end, not anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from organseg.datasets.write import CaseToWrite, nnunet_to_msd, write_nnunet
from organseg.errors import ConfigError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.labels import LabelSet
from organseg.organs import ORGAN_LABELS
from organseg.synth.case import make_phantom
from organseg.synth.phantom import named_rng

#: The CHAOS organs keep their values; the added structures follow.
ABDOMEN_LABELS: tuple[str, ...] = (
    *ORGAN_LABELS,
    "stomach",
    "gallbladder",
    "pancreas",
    "aorta",
    "inferior_vena_cava",
)
#: Mean Hounsfield units of the added structures (contrast-enhanced vessels, water-like bile).
_HU = {
    "stomach": 30.0,
    "gallbladder": 8.0,
    "pancreas": 45.0,
    "aorta": 190.0,
    "inferior_vena_cava": 130.0,
}


def abdomen_label_set() -> LabelSet:
    """The nine-label set of the synthetic abdominal dataset (values 1..9 in :data:`ABDOMEN_LABELS` order)."""
    return LabelSet.from_names(ABDOMEN_LABELS, name="synthetic-abdomen")


def make_abdomen_phantom(
    size: int = 64, slices: int | None = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """``(image HU int16 [z, y, x], labels uint8 1..9, spacing (x, y, z) mm)``; same arguments, same arrays."""
    image, labels, spacing = make_phantom("CT", size=size, slices=slices, seed=seed)
    image = image.astype(np.float32)
    labels = labels.copy()
    rng = named_rng(seed, "abdomen-extra")
    body = image > -500
    _, ys, xs = np.nonzero(body)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    width, height, depth = float(x1 - x0), float(y1 - y0), float(labels.shape[0])
    cx = (x0 + x1) / 2.0
    kidneys = np.isin(labels, (ORGAN_LABELS["right_kidney"], ORGAN_LABELS["left_kidney"]))
    ky = float(np.nonzero(kidneys)[1].mean()) if kidneys.any() else y0 + 0.7 * height
    liver = np.nonzero(labels == ORGAN_LABELS["liver"])
    lz, ly, lx = (
        (float(a.mean()) for a in liver) if liver[0].size else (depth / 2, ky, cx - 0.2 * width)
    )
    zz, yy, xx = np.meshgrid(
        np.arange(labels.shape[0]),
        np.arange(labels.shape[1]),
        np.arange(labels.shape[2]),
        indexing="ij",
    )
    # voxel units; z scaled by the slice/pixel spacing ratio so shapes stay round in millimetres
    zscale = spacing[2] / spacing[0]

    def ellipsoid(
        centre: tuple[float, float, float], radii: tuple[float, float, float]
    ) -> np.ndarray:
        (cz, cy, cxx), (rz, ry, rx) = centre, radii
        return ((zz - cz) * zscale / rz) ** 2 + ((yy - cy) / ry) ** 2 + (
            (xx - cxx) / rx
        ) ** 2 <= 1.0

    def cylinder(cy: float, cxx: float, ry: float, rx: float) -> np.ndarray:
        return ((yy - cy) / ry) ** 2 + ((xx - cxx) / rx) ** 2 <= 1.0

    mid = depth / 2.0
    shapes = {
        "aorta": (
            cylinder(ky - 0.10 * height, cx + 0.05 * width, 0.05 * width, 0.05 * width),
            (0,),
        ),
        "inferior_vena_cava": (
            cylinder(ky - 0.10 * height, cx - 0.09 * width, 0.04 * width, 0.06 * width),
            (0,),
        ),
        "pancreas": (
            ellipsoid(
                (mid, ky - 0.25 * height, cx + 0.08 * width),
                (0.3 * depth * zscale, 0.05 * height, 0.2 * width),
            ),
            (0,),
        ),
        "stomach": (
            ellipsoid(
                (0.35 * depth, y0 + 0.3 * height, cx + 0.22 * width),
                (0.35 * depth * zscale, 0.12 * height, 0.12 * width),
            ),
            (0,),
        ),
        "gallbladder": (
            ellipsoid(
                (min(lz + 0.2 * depth, depth - 2), ly - 0.1 * height, lx + 0.08 * width),
                (0.2 * depth * zscale, 0.06 * height, 0.06 * width),
            ),
            (0, ORGAN_LABELS["liver"]),
        ),
    }
    values = {name: index + 1 for index, name in enumerate(ABDOMEN_LABELS)}
    for name, (shape, replaceable) in shapes.items():
        paint = shape & body & np.isin(labels, replaceable)
        labels[paint] = values[name]
        image[paint] = _HU[name] + rng.normal(0.0, 12.0, int(paint.sum()))
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), labels.astype(np.uint8), spacing


#: The channels of the two-phase synthetic dataset (``venous``), and their modality map.
PHASE_CHANNELS = ["arterial", "venous"]
PHASE_MODALITIES = {"arterial": "CT", "venous": "CT"}
#: HU the venous phase adds inside every labelled organ (a contrast-shifted copy of the image).
VENOUS_SHIFT_HU = 60


def venous_phase(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A second CT phase of ``image``: its organs ``VENOUS_SHIFT_HU`` brighter, on the same grid."""
    shifted = image.astype(np.int32) + VENOUS_SHIFT_HU * (labels > 0)
    return np.clip(shifted, -1024, 3071).astype(np.int16)


def abdomen_cases(
    count: int, size: int, slices: int | None, seed: int, venous: bool = False
) -> list[CaseToWrite]:
    """``count`` synthetic abdominal CT cases ``synth_001``... with identity direction, centred origin;
    ``venous`` adds a second channel, :func:`venous_phase` of the first."""
    from organseg.synth.case import case_seed

    cases = []
    for index in range(1, count + 1):
        image, labels, spacing = make_abdomen_phantom(size, slices, case_seed(seed, "CT", index))
        origin = (-spacing[0] * image.shape[2] / 2, -spacing[1] * image.shape[1] / 2, 0.0)
        geometry = Geometry(spacing=spacing, origin=origin)
        channels = [Volume(image, geometry, Modality.CT)]
        if venous:
            channels.append(Volume(venous_phase(image, labels), geometry, Modality.CT))
        cases.append(CaseToWrite(f"synth_{index:03d}", channels, Volume(labels, geometry)))
    return cases


def write_abdomen_dataset(
    out: Path | str,
    cases: int = 4,
    size: int = 64,
    slices: int | None = 16,
    seed: int = 0,
    format: str = "nnunet",
    overwrite: bool = False,
    venous: bool = False,
) -> Path:
    """A synthetic nine-label abdominal CT dataset in the nnU-Net v2 raw (or MSD) layout at ``out``;
    ``venous``: two CT phases per case (channels ``arterial`` ``_0000`` and ``venous`` ``_0001``, in
    MSD the 4th dimension; mapped to CT by ``organseg_channel_modalities``), a multi-channel dataset."""
    from organseg.datasets.modalities import CHANNEL_MAP_KEY
    from organseg.synth.dataset import check_bounds

    check_bounds(cases, 0, size, slices)
    if format not in ("nnunet", "msd"):
        raise ConfigError(f"format {format!r}: expected nnunet or msd")
    made = abdomen_cases(cases, size, slices, seed, venous)
    names = list(PHASE_CHANNELS) if venous else ["CT"]
    extra = {CHANNEL_MAP_KEY: dict(PHASE_MODALITIES)} if venous else None
    if format == "nnunet":
        return write_nnunet(
            out, made, names, abdomen_label_set(), "synthetic-abdomen", overwrite=overwrite,
            extra=extra,
        )  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        nnunet = write_nnunet(
            Path(tmp) / "nnunet", made, names, abdomen_label_set(), "synthetic-abdomen",
            extra=extra,
        )  # fmt: skip
        return nnunet_to_msd(nnunet, out, overwrite=overwrite)


def write_abdomen_dicom(
    folder: Path | str, size: int = 64, slices: int | None = 16, seed: int = 0, index: int = 1
) -> tuple[Path, np.ndarray]:
    """Case ``synth_{index:03d}`` of :func:`write_abdomen_dataset` (same ``size``, ``slices``, ``seed``)
    as a CT DICOM series in ``folder``, one file per slice with the synthetic CHAOS CT headers: the
    source series a DICOM-SEG of its prediction refers to. Returns ``(folder, labels [z, y, x])``,
    the labels in file order.

    The voxels equal the nnU-Net case's; the grid is the DICOM series' own (its positions and
    spacing), so its reference is ``labels`` on the series as read, not the NIfTI label file.
    """
    from dataclasses import replace

    from organseg.synth.case import CT_INTERCEPT, _to_stored, case_seed, make_ct_case
    from organseg.synth.dataset import check_bounds
    from organseg.synth.dicom_writer import _uid, ct_dicom_name, write_series

    check_bounds(1, 0, size, slices)
    case_rng_seed = case_seed(seed, "CT", index)
    image, labels, _ = make_abdomen_phantom(size, slices, case_rng_seed)
    # make_abdomen_phantom paints into this very case's CT phantom (make_phantom → make_ct_case)
    case = make_ct_case(size, image.shape[0], case_rng_seed, 1)
    (series,) = case.series
    stored = _to_stored(image.astype(np.float32), CT_INTERCEPT, series.signed)
    series = replace(series, image=stored, labels=labels)
    folder = Path(folder)
    names = [ct_dicom_name(k) for k in range(image.shape[0])]
    study_uid, frame_uid = _uid(case_rng_seed, "study"), _uid(case_rng_seed, "frame-of-reference")
    write_series(folder, case, series, names, study_uid, frame_uid)
    return folder, labels
