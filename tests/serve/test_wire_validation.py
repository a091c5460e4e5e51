"""Decoded volumes are validated, and lying or truncated headers are refused before their pixels cost
memory: peak resident memory of the decode step is asserted, not just the answer."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.errors import DataError, RequestTooLarge
from organseg.io.validate import validate_volume
from organseg.io.volume import Geometry, Volume
from organseg.serve.wire import WireLimits, decode_raw, decode_upload

LIMITS = WireLimits(max_request_bytes=64 << 20, max_voxels=200_000_000)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_growth_mib(action: Callable[[], object]) -> float:
    """Growth of the process's resident high-water mark (MiB) while ``action`` runs (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pytest.skip("cannot reset the resident-memory high-water mark here")
    before = _rss_kib("VmRSS")
    try:
        action()
    finally:
        peak = _rss_kib("VmHWM")
    return (peak - before) / 1024


def _volume_file(suffix: str, array: np.ndarray, compress: bool = False) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path), useCompression=compress)
        return path.read_bytes()


def _nifti_claiming(shape_xyz: tuple[int, int, int], payload: bytes, gz: bool) -> bytes:
    """A NIfTI-1 header claiming ``shape_xyz`` int16 voxels, followed by only ``payload``."""
    header = bytearray(_volume_file(".nii", np.zeros((2, 2, 2), np.int16))[:352])
    header[40:56] = struct.pack("<8h", 3, *shape_xyz, 1, 1, 1, 1)[:16]
    data = bytes(header) + payload
    return gzip.compress(data) if gz else data


# -- every decoded volume is checked --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spacing": [1, 1, 1e200]}, "spacing"),
        ({"spacing": [1, float("inf"), 1]}, "spacing"),
        ({"spacing": [0, 1, 1]}, "spacing"),
        ({"origin": [0, float("nan"), 0]}, "origin"),
        ({"origin": [0, 1e300, 0]}, "origin"),
        ({"direction": [0] * 9}, "not orthonormal"),
        ({"direction": [1, 0, 0, 0, 1, 0, 0, 0, float("inf")]}, "finite"),
        ({"direction": [1, 0, 0, 1, 0, 0, 0, 0, 1]}, "not orthonormal"),
    ],
)
def test_raw_geometry_is_validated(change: dict, message: str) -> None:
    kwargs = {"spacing": None, **change}
    with pytest.raises(DataError, match=message):
        decode_raw(
            np.zeros((2, 4, 4), np.int16).tobytes(), "int16", [2, 4, 4], limits=LIMITS, **kwargs
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused(bad: float) -> None:
    array = np.zeros((3, 4, 4), np.float32)
    array[1, 2, 3] = bad
    with pytest.raises(DataError, match="1 voxel\\(s\\) are NaN or infinite"):
        decode_raw(array.tobytes(), "float32", [3, 4, 4], None, limits=LIMITS)
    with pytest.raises(DataError, match="NaN or infinite"):
        decode_upload(_volume_file(".nii.gz", array, compress=True), "x.nii.gz", LIMITS)


def test_zero_size_dimension_is_refused() -> None:
    with pytest.raises(DataError, match="positive"):
        decode_raw(b"\0\0", "int16", [0, 1, 1], None, limits=LIMITS)
    with pytest.raises(DataError, match="empty dimension"):
        validate_volume(Volume(np.zeros((1, 0, 4), np.int16)))


def test_a_good_volume_passes_unchanged() -> None:
    volume = Volume(np.ones((2, 3, 4), np.float32), Geometry((0.7, 0.7, 2.5), (-10, 5, 300)))
    assert validate_volume(volume) is volume


# -- truncated and lying volume files: 4xx before their pixels cost memory --------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
def test_truncated_volume_files_are_refused(suffix: str) -> None:
    array = (np.arange(8 * 64 * 64) % 1000).astype(np.int16).reshape(8, 64, 64)
    data = _volume_file(suffix, array, compress=suffix in (".nii.gz", ".mha", ".nrrd"))
    assert decode_upload(data, f"x{suffix}", LIMITS).shape == (8, 64, 64)  # the whole file is fine
    # .nii.gz: cut the *inflated* file, then recompress (a valid gzip stream)
    cut = (
        gzip.compress(gzip.decompress(data)[:-4096])
        if suffix == ".nii.gz"
        else data[: len(data) // 2]
    )
    with pytest.raises(DataError, match=r"truncated|corrupt"):
        decode_upload(cut, f"x{suffix}", LIMITS)


@pytest.mark.parametrize("gz", [False, True])
def test_lying_nifti_header_costs_nothing(gz: bool) -> None:
    """512³ int16 claimed (256 MiB), 1 KiB present: 400 without allocating the claim."""
    data = _nifti_claiming((512, 512, 512), b"\1" * 1024, gz)
    caught: list[Exception] = []

    def decode() -> None:
        try:
            decode_upload(data, "x.nii.gz" if gz else "x.nii", LIMITS)
        except DataError as exc:
            caught.append(exc)

    growth = peak_growth_mib(decode)
    assert caught
    assert "header claims [512, 512, 512]" in str(caught[0])
    assert not isinstance(caught[0], RequestTooLarge)
    assert growth < 32, f"decode step grew resident memory by {growth:.0f} MiB"


def test_header_over_the_voxel_limit_is_413_without_decoding() -> None:
    data = _nifti_claiming((2048, 2048, 1024), b"\1" * 1024, gz=True)
    caught: list[Exception] = []
    growth = peak_growth_mib(lambda: _capture(caught, lambda: decode_upload(data, None, LIMITS)))
    assert isinstance(caught[0], RequestTooLarge), caught
    assert "limit" in str(caught[0])
    assert growth < 32


def test_gzip_bomb_is_inflated_in_bounded_chunks() -> None:
    """A valid header claiming 64³ int16 followed by 200 MiB of inflated zeros: memory stays small."""
    bomb = _nifti_claiming((64, 64, 64), b"\0" * (200 << 20), gz=True)
    assert len(bomb) < 1 << 20
    caught: list[Exception] = []
    limits = WireLimits(max_request_bytes=8 << 20, max_voxels=1 << 20)

    def decode() -> None:
        _capture(caught, lambda: decode_upload(bomb, "x.nii.gz", limits))

    growth = peak_growth_mib(decode)
    assert growth < 48, f"{growth:.0f} MiB"
    # with a valid header the extra bytes are ignored by the reader: either answered, or refused early


def test_dicom_header_claiming_16000_squared_is_refused_from_its_header(synth_root: Path) -> None:
    """The issue's 0.5 MB zip holding one 16000² slice: refused before a pixel is decoded."""
    import pydicom

    ds = pydicom.dcmread(
        sorted((synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon").iterdir())[0]
    )
    ds.Rows = ds.Columns = 16000
    ds.PixelData = bytes(16000 * 16000 * 2)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("slice.dcm", buffer.getvalue())
    del ds, buffer
    data = packed.getvalue()
    assert len(data) < 1 << 20
    caught: list[Exception] = []
    limits = WireLimits(max_request_bytes=1 << 30, max_voxels=30_000_000)
    started = time.perf_counter()
    growth = peak_growth_mib(lambda: _capture(caught, lambda: decode_upload(data, None, limits)))
    assert time.perf_counter() - started < 1.0  # refused from the member's header, nothing unpacked
    assert isinstance(caught[0], RequestTooLarge), caught
    assert "claims at least 256000000 voxels" in str(caught[0])
    assert growth < 64, f"{growth:.0f} MiB (the 488 MiB file is neither unpacked nor decoded)"


def test_raw_zlib_inflates_no_further_than_the_shape() -> None:
    bomb = zlib.compress(b"\0" * (100 << 20))
    with pytest.raises(DataError, match="bytes"):
        decode_raw(bomb, "int16", [4, 8, 8], None, compression="zlib", limits=LIMITS)


def _capture(caught: list[Exception], action: Callable[[], object]) -> None:
    try:
        action()
    except DataError as exc:
        caught.append(exc)


def test_a_decoded_volume_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder checks the voxels; the predictor's own check of the same volume costs nothing,
    while a new volume made from it (new voxels) is checked again."""
    import organseg.io.validate as validate

    scans: list[int] = []
    count = validate._count_nonfinite
    monkeypatch.setattr(validate, "_count_nonfinite", lambda a: scans.append(1) or count(a))
    array = np.zeros((3, 4, 4), np.float32)
    volume = decode_raw(array.tobytes(), "float32", [3, 4, 4], None, limits=LIMITS)
    assert (volume.validated, len(scans)) == (True, 1)
    assert validate_volume(volume, "the image") is volume
    assert len(scans) == 1
    bad = array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="the image: 1 voxel\\(s\\) are NaN or infinite"):
        validate_volume(volume.with_array(bad), "the image")
