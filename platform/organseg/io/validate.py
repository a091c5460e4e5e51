"""Checks every decoded volume passes before a network sees it, and header checks before decoding.

A volume with NaN voxels, an infinite origin, a direction that is not a rotation or a spacing of 1e200 mm
would still "segment" - into a confident, wrong answer (organ volumes of inf mL). These checks turn such
input into a :class:`~organseg.errors.DataError` naming the field.

Volume-file headers (NIfTI-1/2, MetaImage, NRRD) are read by SimpleITK without pixels; the pixel byte
count they imply is checked against the voxel limit and against the bytes actually present (compressed
payloads are inflated in bounded chunks, never past the count the header claims) before SimpleITK reads
the pixels. We parse the three formats' data offsets ourselves because SimpleITK exposes sizes but not
where the pixel bytes start; everything else stays SimpleITK's.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from organseg.errors import DataError, RequestTooLarge
from organseg.io.volume import Volume

#: Voxel spacing outside this range (mm) is no human scan: a unit error or a corrupt header.
SPACING_RANGE_MM = (1e-3, 1e3)
#: |origin| beyond this (mm) is no position in a scanner.
MAX_ORIGIN_MM = 1e6
#: Direction cosines may deviate this much from a rotation (files store them rounded).
DIRECTION_TOLERANCE = 1e-3


def validate_volume(volume: Volume, what: str = "the volume") -> Volume:
    """Refuse volumes a network must not see; returns ``volume`` unchanged when it passes.

    Each volume is checked once, where it arrives (the served graph's decoders, the batch loaders),
    naming what it is there; the predictor's own call then returns at once (``volume.validated``).
    Any new volume (:meth:`Volume.with_array`, a new geometry) starts unchecked.
    """
    if volume.validated:
        return volume
    array = volume.array
    if array.ndim != 3 or any(s <= 0 for s in array.shape):
        raise DataError(f"{what}: shape {list(array.shape)} has an empty dimension")
    if array.dtype.kind not in "iufb":
        raise DataError(f"{what}: voxel type {array.dtype} is not a number")
    if array.dtype.kind == "f":
        bad = _count_nonfinite(array)
        if bad:
            raise DataError(f"{what}: {bad} voxel(s) are NaN or infinite; send finite intensities")
    validate_geometry(volume.spacing, volume.origin, volume.direction, what)
    volume.validated = True
    return volume


def _count_nonfinite(array: np.ndarray, chunk: int = 8) -> int:
    """NaN/inf count, slab by slab (no full-size boolean temporary)."""
    return int(
        sum(
            np.count_nonzero(~np.isfinite(array[z : z + chunk]))
            for z in range(0, len(array), chunk)
        )
    )


def validate_geometry(spacing, origin, direction, what: str = "the volume") -> None:
    """Finite spacing within a plausible range, finite origin, direction a rotation (or reflection)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    low, high = SPACING_RANGE_MM
    if (
        spacing.size != 3
        or not np.all(np.isfinite(spacing))
        or np.any(spacing < low)
        or np.any(spacing > high)
    ):
        raise DataError(
            f"{what}: spacing {spacing.tolist()} mm; each must be finite and between {low:g} and "
            f"{high:g} mm"
        )
    if (
        origin.size != 3
        or not np.all(np.isfinite(origin))
        or np.any(np.abs(origin) > MAX_ORIGIN_MM)
    ):
        raise DataError(f"{what}: origin {origin.tolist()} mm is not a finite position")
    if direction.size != 9 or not np.all(np.isfinite(direction)):
        raise DataError(f"{what}: direction {direction.tolist()} must be 9 finite numbers")
    matrix = direction.reshape(3, 3)
    if not np.allclose(matrix.T @ matrix, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise DataError(
            f"{what}: direction {np.round(direction, 4).tolist()} is not orthonormal (its columns "
            "must be perpendicular unit vectors)"
        )


# -- volume-file headers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume file's header claims: size (x, y, z...), bytes per voxel, where pixels start."""

    size: tuple[int, ...]
    bytes_per_voxel: int
    data_offset: int
    encoding: str  # "raw", "gzip" (whole file), "zlib", "gzip-data", "bzip2-data"
    #: numpy dtype of float voxels whose NaN/inf the reader would hide (NIfTI turns NaN into 0)
    scan_dtype: str | None = None

    @property
    def voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))

    @property
    def pixel_bytes(self) -> int:
        return self.voxels * self.bytes_per_voxel


def read_volume_header(path: Path, suffix: str) -> VolumeHeader:
    """The header of a NIfTI/MHA/NRRD file (SimpleITK for size and type, our parse for the offset)."""
    offset, encoding, endian = _data_offset(path, suffix)  # our parse first: it names the damage
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(f"unreadable {suffix} volume: header corrupt or truncated") from None
    size = tuple(int(s) for s in reader.GetSize())
    if not size or any(s <= 0 for s in size):
        raise DataError(
            f"{suffix} header gives size {list(size)}; every dimension must be positive"
        )
    per_voxel = reader.GetNumberOfComponents() * _pixel_bytes(reader.GetPixelID())
    scan = None
    if endian is not None and reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        scan = endian + ("f4" if reader.GetPixelID() == sitk.sitkFloat32 else "f8")
    return VolumeHeader(size, per_voxel, offset, encoding, scan)


def _pixel_bytes(pixel_id: int) -> int:
    name = sitk.GetPixelIDValueAsString(pixel_id)
    for key, width in (
        ("64-bit", 8),
        ("double", 8),
        ("32-bit", 4),
        ("float", 4),
        ("16-bit", 2),
        ("8-bit", 1),
    ):
        if key in name:
            return width
    return 8  # unknown: assume the widest so the limit errs on the safe side


def _data_offset(path: Path, suffix: str) -> tuple[int, str, str | None]:
    """(pixel data offset, encoding, NIfTI byte order or None)."""
    with path.open("rb") as stream:
        head = stream.read(1 << 16)
    if suffix == ".nii.gz":
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(544)
        except (OSError, EOFError, zlib.error):
            raise DataError("corrupt gzip in the uploaded NIfTI file") from None
        offset, endian = _nifti_offset(head)
        return offset, "gzip", endian
    if suffix == ".nii":
        offset, endian = _nifti_offset(head)
        return offset, "raw", endian
    if suffix in (".mha", ".mhd"):
        return _text_header_end(head, b"ElementDataFile", suffix), _mha_encoding(head), None
    if suffix == ".nrrd":
        return _text_header_end(head, None, suffix), _nrrd_encoding(head), None
    raise DataError(f"{suffix}: not a volume format this server reads")


def _nifti_offset(head: bytes) -> tuple[int, str]:
    if len(head) < 348:
        raise DataError("NIfTI file is truncated (header shorter than 348 bytes)")
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", head[:4])
        if sizeof_hdr == 348:
            (vox_offset,) = struct.unpack(endian + "f", head[108:112])
            return (max(352, int(vox_offset)) if np.isfinite(vox_offset) else 352), endian
        if sizeof_hdr == 540 and len(head) >= 540:
            (vox_offset,) = struct.unpack(endian + "q", head[168:176])
            return max(544, int(vox_offset)), endian
    raise DataError("not a NIfTI-1 or NIfTI-2 header")


def _text_header_end(head: bytes, last_key: bytes | None, suffix: str) -> int:
    if last_key is not None:  # MetaImage: the line starting with ElementDataFile ends the header
        match = re.search(rb"^ElementDataFile\s*=\s*(\S+)[^\n]*\n", head, re.MULTILINE)
        if match is None:
            raise DataError(f"{suffix} header has no ElementDataFile line")
        if match.group(1).upper() != b"LOCAL":
            raise DataError(
                f"{suffix} header points at a separate data file; send one self-contained .mha file"
            )
        return match.end()
    end = head.find(b"\n\n")  # NRRD: a blank line ends the header
    if end < 0:
        raise DataError(f"{suffix} header has no end (blank line) in its first 64 KiB")
    if re.search(rb"^data ?file\s*:", head[:end], re.MULTILINE | re.IGNORECASE):
        raise DataError(f"{suffix} header points at a separate data file; send one .nrrd file")
    return end + 2


def _mha_encoding(head: bytes) -> str:
    match = re.search(rb"^CompressedData\s*=\s*(\w+)", head, re.MULTILINE)
    return "zlib" if match and match.group(1).lower() == b"true" else "raw"


def _nrrd_encoding(head: bytes) -> str:
    match = re.search(rb"^encoding\s*:\s*(\w+)", head, re.MULTILINE)
    value = match.group(1).lower() if match else b"raw"
    if value in (b"gzip", b"gz"):
        return "gzip-data"
    if value in (b"bzip2", b"bz2"):
        return "bzip2-data"
    if value == b"raw":
        return "raw"
    raise DataError(
        f".nrrd encoding {value.decode(errors='replace')!r} is not accepted; use raw or gzip"
    )


def check_volume_file(path: Path, suffix: str, max_voxels: int) -> VolumeHeader:
    """Refuse, before pixels are decoded, files claiming too many voxels or holding fewer pixel bytes
    than their header claims (truncated or lying headers); compressed data is inflated in chunks and
    never past the claimed count."""
    header = read_volume_header(path, suffix)
    if header.voxels > max_voxels:
        raise RequestTooLarge(
            f"the {suffix} header claims {list(header.size)} = {header.voxels} voxels; the limit is "
            f"{max_voxels}"
        )
    present = _payload_bytes(path, header)
    if present < header.pixel_bytes:
        raise DataError(
            f"the {suffix} file holds {present} bytes of pixel data but its header claims "
            f"{list(header.size)} voxels of {header.bytes_per_voxel} byte(s) = {header.pixel_bytes} "
            "bytes; the file is truncated or its header lies"
        )
    return header


def _payload_bytes(path: Path, header: VolumeHeader) -> int:
    """Pixel bytes present after the header, counted up to one byte past the claim (bounded work).

    Float NIfTI payloads are scanned for NaN/inf on the way (the NIfTI reader would turn NaN into 0).
    """
    need = header.pixel_bytes
    if header.encoding == "raw" and header.scan_dtype is None:
        return max(0, path.stat().st_size - header.data_offset)
    if header.encoding in ("raw", "gzip"):
        chunks = _file_chunks(path, header.encoding == "gzip")
        skip = header.data_offset
    else:
        with path.open("rb") as stream:
            stream.seek(header.data_offset)
            compressed = stream.read()
        skip = 0
        chunks = {
            "zlib": lambda: _zlib_chunks(compressed),
            "gzip-data": lambda: _gzip_chunks(io.BytesIO(compressed)),
            "bzip2-data": lambda: _bz2_chunks(compressed),
        }[header.encoding]()
    return _count(chunks, skip, need, header.scan_dtype)


def _count(chunks: Iterator[bytes], skip: int, need: int, scan_dtype: str | None) -> int:
    """Bytes after ``skip`` up to ``need + 1``; refuses non-finite floats when ``scan_dtype`` is set."""
    total = 0
    carry = b""
    width = np.dtype(scan_dtype).itemsize if scan_dtype else 1
    bad = 0
    try:
        for chunk in chunks:
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            chunk = chunk[: max(0, need + 1 - total)]
            total += len(chunk)
            if scan_dtype and chunk:
                block = carry + chunk
                whole = len(block) - len(block) % width
                values = np.frombuffer(block[:whole], dtype=scan_dtype)
                bad += int(np.count_nonzero(~np.isfinite(values)))
                carry = block[whole:]
            if total > need:
                break
    except (OSError, EOFError, zlib.error, ValueError):
        pass  # a truncated stream: count what inflated
    if bad:
        raise DataError(f"{bad} voxel(s) are NaN or infinite; send finite intensities")
    return total


def _file_chunks(path: Path, gz: bool) -> Iterator[bytes]:
    opener = gzip.open if gz else open
    with opener(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            yield chunk


def _gzip_chunks(source) -> Iterator[bytes]:
    with gzip.open(source, "rb") as stream:
        while chunk := stream.read(1 << 20):
            yield chunk


def _zlib_chunks(data: bytes) -> Iterator[bytes]:
    inflater = zlib.decompressobj()
    view = memoryview(data)
    for start in range(0, len(data), 1 << 16):
        out = inflater.decompress(view[start : start + (1 << 16)], 1 << 20)
        yield out
        while inflater.unconsumed_tail:
            yield inflater.decompress(inflater.unconsumed_tail, 1 << 20)


def _bz2_chunks(data: bytes) -> Iterator[bytes]:
    inflater = bz2.BZ2Decompressor()
    for start in range(0, len(data), 1 << 16):
        out = inflater.decompress(data[start : start + (1 << 16)], 1 << 20)
        yield out
        while not inflater.needs_input and not inflater.eof:
            yield inflater.decompress(b"", 1 << 20)
