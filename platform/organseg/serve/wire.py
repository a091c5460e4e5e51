"""How volumes and label maps travel: decoding requests and encoding responses, with limits.

Pixels are the cost in this service (not the networks), so the wire carries each volume in its own dtype
(int16 CT, uint16 MR), optionally zlib-compressed, and label maps as compressed uint8 - never as floats.
Every decoder checks sizes before allocating and raises a :class:`DataError` naming the problem, so bad
input costs a 4xx answer, not a replica.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from organseg.errors import DataError, RequestTooLarge
from organseg.io.dicom import read_dicom_series
from organseg.io.files import read_volume_file
from organseg.io.png import labels_to_grey
from organseg.io.validate import check_volume_file, validate_geometry, validate_volume
from organseg.io.volume import Geometry, Modality, Volume
from organseg.labels import LabelSet, chaos_label_set

RAW_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
OUTPUT_FORMATS = ("nifti", "png-zip", "raw")


@dataclass(frozen=True)
class WireLimits:
    max_request_bytes: int = 1024 * 1024 * 1024
    max_voxels: int = 400 * 1024 * 1024  # e.g. 1600 slices of 512²
    max_zip_members: int = 5000

    def check_bytes(self, size: int, what: str = "request") -> None:
        """RequestTooLarge (413) when ``size`` bytes exceed the request limit; ``what`` names the part."""
        if size > self.max_request_bytes:
            raise RequestTooLarge(
                f"{what} is {size / 2**20:.1f} MiB; this server accepts at most "
                f"{self.max_request_bytes / 2**20:.0f} MiB"
            )

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """DataError unless ``shape`` is three positive sizes; RequestTooLarge when it holds more
        voxels than allowed.
        """
        if len(shape) != 3 or any(int(s) <= 0 for s in shape):
            raise DataError(f"shape must be three positive sizes (z, y, x), got {list(shape)}")
        voxels = math.prod(int(s) for s in shape)  # Python ints: a shape of 1e30 cannot overflow
        if voxels > self.max_voxels:
            raise RequestTooLarge(
                f"volume of {list(shape)} has {voxels} voxels; the limit is {self.max_voxels}"
            )


def _sniff_suffix(data: bytes, filename: str | None) -> str:
    name = (filename or "").lower()
    for suffix in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.endswith(suffix):
            return suffix
    if data[:2] == b"\x1f\x8b":
        return ".nii.gz"
    if data[:4] == b"NRRD":
        return ".nrrd"
    if data[:10].startswith(b"ObjectType") or b"ElementDataFile" in data[:4096]:
        return ".mha"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return ".nii"
    raise DataError(
        "the uploaded file is not a NIfTI, MHA or NRRD volume nor a DICOM object (unrecognised "
        "content); send a volume file, one DICOM file, or a zip of one DICOM series"
    )


def decode_volume_file(data: bytes, filename: str | None, limits: WireLimits) -> Volume:
    """A NIfTI/MHA/NRRD file's bytes as a validated Volume (SimpleITK reads a private temporary file).

    Before any pixel is decoded, the header's voxel count is held to the limit and the pixel bytes it
    claims are checked against the bytes present (compressed data inflated in bounded chunks).
    """
    if not data:
        raise DataError("empty volume file")
    limits.check_bytes(len(data), "volume file")
    suffix = _sniff_suffix(data, filename)
    with tempfile.TemporaryDirectory(prefix="organseg-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        header = check_volume_file(path, suffix, limits.max_voxels)
        size = header.size
        if len(size) not in (2, 3):
            raise DataError(f"the {suffix} file is {len(size)}D; send a 2D or 3D volume")
        limits.check_shape(tuple(reversed(size)) if len(size) == 3 else (1, *reversed(size)))
        try:
            volume = read_volume_file(path)
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), f"uploaded {suffix} file")) from None
    volume.meta["source"] = f"uploaded {suffix} file"  # never the uploaded name
    return validate_volume(volume, f"the uploaded {suffix} volume")


def _unsafe_member_name(name: str) -> bool:
    """Absolute paths, drive letters and ``..`` parts could write outside the extraction folder."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "\x00" in name


def _is_symlink(member: zipfile.ZipInfo) -> bool:
    return (member.external_attr >> 16) & 0o170000 == 0o120000


def _copy_bounded(source: io.BufferedIOBase, sink: io.BufferedIOBase, budget: int) -> int:
    """Copy at most ``budget`` bytes; stop as soon as more arrive (a member may lie about its size)."""
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > budget:
            raise RequestTooLarge("")
        sink.write(chunk)
    return copied


def _check_member_headers(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], limits: WireLimits
) -> None:
    """Sum Rows x Columns x frames from the first 64 KiB of each member (headers come first in DICOM),
    so a small zip claiming a huge image is refused before it is inflated to disk."""
    import pydicom

    voxels = 0
    for number, member in enumerate(members, start=1):
        try:
            with archive.open(member) as stream:
                head = stream.read(1 << 16)
            ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True, force=True)
            rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            frames = int(ds.get("NumberOfFrames") or 1)
        except Exception:  # not DICOM, or a header past 64 KiB: the check after unpacking decides
            continue
        voxels += max(rows, 0) * max(columns, 0) * max(frames, 1)
        if voxels > limits.max_voxels:
            raise RequestTooLarge(
                f"the series claims at least {voxels} voxels ({rows}x{columns} pixels x {frames} "
                f"frame(s) in zip member {number}); the limit is {limits.max_voxels}"
            )


def _unpack_zip(data: bytes, limits: WireLimits, folder: Path) -> list[Path]:
    """Extract a zip of DICOM files into ``folder`` under neutral names (``member-<index>``), within the
    limits: member count, declared and actual unzipped bytes, and the headers' voxel count (checked
    before anything is unpacked). Returns the extracted files."""
    if not data:
        raise DataError("empty DICOM zip")
    limits.check_bytes(len(data), "DICOM zip")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError("the upload is not a valid zip archive") from None
    extracted: list[Path] = []
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise DataError("the zip archive is empty")
        if len(members) > limits.max_zip_members:
            raise RequestTooLarge(
                f"the zip holds {len(members)} files; the limit is {limits.max_zip_members}"
            )
        for number, member in enumerate(members, start=1):
            if _unsafe_member_name(member.filename) or _is_symlink(member):
                raise DataError(
                    f"zip member {number} has an unsafe name or is a link (absolute path, '..' or "
                    "drive letter); zip the series folder with relative names"
                )
        total = sum(m.file_size for m in members)
        limits.check_bytes(total, "unzipped DICOM series")
        _check_member_headers(archive, members, limits)  # before anything is unpacked
        budget = limits.max_request_bytes
        for number, member in enumerate(members, start=1):
            name = Path(member.filename.replace("\\", "/")).name
            parts = member.filename.replace("\\", "/").split("/")
            if name.startswith(".") or name.upper() == "DICOMDIR" or "__MACOSX" in parts:
                continue
            target = folder / f"member-{number:05d}"
            try:
                with archive.open(member) as source, target.open("wb") as sink:
                    budget -= _copy_bounded(source, sink, budget)
            except RequestTooLarge:
                raise RequestTooLarge(
                    f"the zip unpacks to more than {limits.max_request_bytes / 2**20:.0f} MiB "
                    "(the server's limit); stopped while unpacking"
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise DataError(f"zip member {number} is corrupt ({type(exc).__name__})") from None
            extracted.append(target)
    return extracted


def decode_dicom_zip(data: bytes, limits: WireLimits) -> Volume:
    """A zip of exactly one DICOM series (any folder depth) as a Volume ordered by slice position.

    Members are extracted under neutral names (their index in the archive), so no uploaded file or
    folder name reaches a message or the disk; unsafe names (absolute, ``..``) and links are refused.
    Declared and actual unzipped sizes are both held to the byte limit while extracting, and the
    headers' pixel counts to the voxel limit before any pixel is decoded.
    """
    with tempfile.TemporaryDirectory(prefix="organseg-dicom-") as tmp:
        _unpack_zip(data, limits, Path(tmp))
        volume = _read_uploaded_series(Path(tmp), limits)
    volume.meta["source"] = "uploaded DICOM zip"
    return volume


def decode_dicom_zip_series(data: bytes, limits: WireLimits) -> list[Volume]:
    """A zip of one or more DICOM series (e.g. a patient's T1 in-phase, out-of-phase and T2-SPIR),
    one validated Volume per series in SeriesNumber order.

    Instances are grouped by SeriesInstanceUID (a dual-echo series split by EchoTime,
    :func:`~organseg.io.dicom.group_series`); each group is read exactly as a one-series zip is, and
    the voxel limit counts every series of the request together. ``meta["series_label"]`` names each
    series by SeriesNumber and InstanceNumbers for messages and answers.
    """
    from organseg.io.dicom import group_series

    with tempfile.TemporaryDirectory(prefix="organseg-dicom-") as tmp:
        folder = Path(tmp)
        try:
            groups = group_series(_unpack_zip(data, limits, folder))
        except DataError as exc:
            message = re.sub(r"member-0*(\d+)", r"zip member \1", str(exc))
            raise type(exc)(message) from None
        volumes: list[Volume] = []
        used = 0
        for k, group in enumerate(groups, start=1):
            where = folder
            if len(groups) > 1:  # each series in its own folder, still under neutral names
                where = folder / f"series-{k:03d}"
                where.mkdir()
                for path in group.paths:
                    path.rename(where / path.name)
            budget = replace(limits, max_voxels=max(1, limits.max_voxels - used))
            try:
                volume = _read_uploaded_series(where, budget)
            except DataError as exc:
                if len(groups) == 1:
                    raise
                raise type(exc)(f"{group.label}: {exc}") from None
            used += int(np.prod(volume.shape, dtype=np.int64))
            volume.meta["source"] = "uploaded DICOM zip"
            volume.meta["series_label"] = group.label
            volumes.append(volume)
    return volumes


def _read_uploaded_series(folder: Path, limits: WireLimits) -> Volume:
    """Read extracted upload files; messages name zip members by number, never by path."""
    try:
        volume = read_dicom_series(folder, max_voxels=limits.max_voxels, anonymous=True)
    except DataError as exc:
        message = str(exc).replace(str(folder) + "/", "").replace(str(folder), "the upload")
        message = re.sub(r"member-0*(\d+)", r"zip member \1", message)
        raise type(exc)(message) from None
    limits.check_shape(volume.shape)
    for key in ("first_file", "last_file", "source"):
        volume.meta.pop(key, None)
    return validate_volume(volume, "the uploaded DICOM series")


def decode_dicom_file(data: bytes, limits: WireLimits) -> Volume:
    """One uploaded DICOM object: a multi-frame (enhanced) series, or a single slice."""
    limits.check_bytes(len(data), "DICOM file")
    with tempfile.TemporaryDirectory(prefix="organseg-dicom-") as tmp:
        (Path(tmp) / "member-00001").write_bytes(data)
        volume = _read_uploaded_series(Path(tmp), limits)
    volume.meta["source"] = "uploaded DICOM file"
    return volume


#: After a request whose upload exceeded this, the router hands freed memory back to the OS.
RELEASE_AFTER_BYTES = 16 * 1024 * 1024


def release_memory() -> None:
    """Return freed heap pages to the OS after a large request.

    Decoding a large upload leaves glibc arenas holding hundreds of MB that Python has already freed;
    without ``malloc_trim`` a replica's resident memory stays at its peak after a burst of big requests.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def bounded_request(request, limits: WireLimits):
    """The same Starlette request, its body stream cut off with :class:`RequestTooLarge` as soon as it
    passes the byte limit (chunked uploads carry no Content-Length to check up front)."""
    from starlette.requests import Request

    received = 0
    upstream = request.receive

    async def receive() -> dict:
        nonlocal received
        message = await upstream()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limits.max_request_bytes:
                raise RequestTooLarge(
                    f"the request body passed {limits.max_request_bytes / 2**20:.0f} MiB, this "
                    "server's limit; stopped reading it"
                )
        return message

    return Request(request.scope, receive)


def decode_upload(data: bytes, filename: str | None, limits: WireLimits) -> Volume:
    """Any uploaded file by its content: a zip of one DICOM series, one DICOM object, or a volume file."""
    if not data:
        raise DataError("the uploaded file is empty")
    if data[:4] == b"PK\x03\x04":
        return decode_dicom_zip(data, limits)
    if is_dicom(data):
        return decode_dicom_file(data, limits)
    return decode_volume_file(data, filename, limits)


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 (the "DICM" marker at byte 128)."""
    return data[128:132] == b"DICM"


def decode_raw(
    data: bytes,
    dtype: str,
    shape: list[int] | tuple[int, ...],
    spacing: list[float] | tuple[float, ...] | None,
    origin: list[float] | tuple[float, ...] | None = None,
    direction: list[float] | tuple[float, ...] | None = None,
    compression: str | None = None,
    limits: WireLimits | None = None,
) -> Volume:
    """Raw C-order voxels plus geometry as a Volume; the byte count must match shape × dtype exactly."""
    limits = limits or WireLimits()
    if not data:
        raise DataError("empty raw volume (no bytes)")
    limits.check_bytes(len(data), "raw volume")
    if dtype not in RAW_DTYPES:
        raise DataError(f"dtype {dtype!r} is not accepted; use one of {list(RAW_DTYPES)}")
    shape = tuple(int(s) for s in shape)
    limits.check_shape(shape)
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if compression in ("zlib",):
        try:
            inflater = zlib.decompressobj()
            data = inflater.decompress(data, expected + 1)
        except zlib.error as exc:
            raise DataError(f"corrupt zlib data in the raw volume ({exc})") from None
    elif compression not in (None, "", "none"):
        raise DataError(f"compression {compression!r} is not supported; use 'zlib' or none")
    if len(data) != expected:
        raise DataError(
            f"raw volume has {len(data)} bytes but shape {list(shape)} of {dtype} needs {expected} bytes"
        )
    spacing = tuple(spacing) if spacing else (1.0, 1.0, 1.0)
    origin = tuple(origin) if origin else (0.0, 0.0, 0.0)
    direction = tuple(direction) if direction else (1, 0, 0, 0, 1, 0, 0, 0, 1)
    validate_geometry(spacing, origin, direction, "the raw volume")  # before any voxel is copied
    geometry = Geometry(spacing=spacing, origin=origin, direction=direction)
    array = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    volume = Volume(array=array, geometry=geometry, meta={"source": "raw upload"})
    return validate_volume(volume, "the raw volume")


def encode_raw(volume: Volume, compress: bool = True) -> dict:
    """The client side of :func:`decode_raw`: the volume's own dtype, zlib-compressed."""
    array = np.ascontiguousarray(volume.array)
    data = array.tobytes()
    return {
        "data": zlib.compress(data, 1) if compress else data,
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": list(volume.direction),
        "compression": "zlib" if compress else "none",
    }


def png_zip_problem(label_set: LabelSet) -> str | None:
    """Why ``png-zip`` cannot carry ``label_set``'s label maps (None: it can). Its PNGs hold the CHAOS
    grey levels, which exist only for the CHAOS organs at their CHAOS values; any other label would
    come out wrong or not at all, so such a request is refused before anything is predicted."""
    chaos = chaos_label_set()
    foreign = [
        f"{label.name}={label.value}"
        for label in label_set
        if label.name not in chaos.names or chaos[label.name].value != label.value
    ]
    if not foreign:
        return None
    return (
        f"output_format 'png-zip' writes CHAOS PNG series, which have no grey level for "
        f"{', '.join(foreign)} of this model's label set; ask for nifti or raw"
    )


def encode_labels(labels: Volume, output_format: str = "nifti") -> bytes:
    """The label map as NIfTI (gzip) bytes, a zip of CHAOS PNGs, or zlib-compressed raw uint8."""
    if output_format in ("", None, "nifti"):
        with tempfile.TemporaryDirectory(prefix="organseg-out-") as tmp:
            path = Path(tmp) / "labels.nii.gz"
            image = labels.to_sitk()
            image.SetMetaData("ITK_FileNotes", f"organseg modality={labels.modality.value}")
            sitk.WriteImage(image, str(path), useCompression=True)
            return path.read_bytes()
    if output_format == "png-zip":
        grey = labels_to_grey(labels.array, labels.modality)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            for z in range(grey.shape[0]):
                png = io.BytesIO()
                from PIL import Image

                Image.fromarray(grey[z]).save(png, format="PNG")
                archive.writestr(f"results{z + 1:03d}.png", png.getvalue())
        return buffer.getvalue()
    if output_format == "raw":
        return zlib.compress(np.ascontiguousarray(labels.array, dtype=np.uint8).tobytes(), 1)
    raise DataError(f"output_format {output_format!r} is not one of {list(OUTPUT_FORMATS)}")


def decode_labels(
    data: bytes, output_format: str, shape: list[int], geometry: Geometry, modality: str
) -> Volume:
    """The client side of :func:`encode_labels` (NIfTI and raw; PNG zips are for people)."""
    if output_format in ("", "nifti"):
        volume = decode_volume_file(data, "labels.nii.gz", WireLimits())
        volume.array = volume.array.astype(np.uint8)
        return volume
    if output_format == "raw":
        array = np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(shape)
        return Volume(array.copy(), geometry, Modality.parse(modality))
    raise DataError(f"cannot decode {output_format!r} labels into a volume")
