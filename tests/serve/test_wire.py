"""Wire formats and limits (no Ray): what the router decodes and encodes."""

import gzip
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from organseg.errors import DataError
from organseg.io.files import write_volume_file
from organseg.io.volume import Geometry, Modality, Volume
from organseg.serve.client import zip_dicom_series
from organseg.serve.wire import (
    RequestTooLarge,
    WireLimits,
    decode_dicom_zip,
    decode_labels,
    decode_raw,
    decode_volume_file,
    encode_labels,
    encode_raw,
)

LIMITS = WireLimits(max_request_bytes=8 * 2**20, max_voxels=2_000_000)


def _volume() -> Volume:
    geometry = Geometry(
        spacing=(0.7, 0.7, 2.5), origin=(1, 2, 3), direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    array = np.random.default_rng(0).integers(-1000, 1000, (5, 16, 12)).astype(np.int16)
    return Volume(array, geometry, Modality.CT)


def test_raw_round_trip_keeps_dtype_and_geometry() -> None:
    volume = _volume()
    raw = encode_raw(volume)
    assert raw["dtype"] == "int16"
    assert raw["compression"] == "zlib"
    back = decode_raw(raw.pop("data"), limits=LIMITS, **raw)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry == volume.geometry


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"data": b"\x00" * 10, "dtype": "int16", "shape": [2, 2, 2]}, DataError, "needs 16 bytes"),
        ({"data": b"\x00" * 16, "dtype": "complex64", "shape": [2, 2, 2]}, DataError, "dtype"),
        ({"data": b"\x00" * 16, "dtype": "int16", "shape": [2, 0, 4]}, DataError, "positive"),
        ({"data": b"\x00" * 16, "dtype": "int16", "shape": [2, 2]}, DataError, "three"),
        (
            {"data": b"\x00" * 16, "dtype": "int16", "shape": [4000, 4000, 4000]},
            RequestTooLarge,
            "limit",
        ),
        ({"data": b"", "dtype": "int16", "shape": [1, 1, 1]}, DataError, "empty"),
        (
            {"data": b"garbage", "dtype": "int16", "shape": [1, 1, 1], "compression": "zlib"},
            DataError,
            "zlib",
        ),
        (
            {"data": b"\x00\x00", "dtype": "int16", "shape": [1, 1, 1], "compression": "lz4"},
            DataError,
            "compression",
        ),
        (
            {"data": b"\x00\x00", "dtype": "int16", "shape": [1, 1, 1], "spacing": [1, -1, 1]},
            DataError,
            "spacing",
        ),
    ],
)
def test_raw_errors(kwargs: dict, error: type, message: str) -> None:
    kwargs = {"spacing": None, **kwargs}
    with pytest.raises(error, match=message):
        decode_raw(limits=LIMITS, **kwargs)


def test_zip_bomb_is_refused_before_inflating() -> None:
    payload = zlib.compress(b"\x00" * (16 * 2**20))
    with pytest.raises(RequestTooLarge):
        decode_raw(payload, "uint8", [16, 1024, 1024], None, compression="zlib", limits=LIMITS)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_volume_files_by_content(tmp_path: Path, suffix: str) -> None:
    volume = _volume()
    data = write_volume_file(volume, tmp_path / f"v{suffix}").read_bytes()
    back = decode_volume_file(data, None, LIMITS)  # no file name: recognised by content
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.isclose(volume.geometry)
    assert back.modality is Modality.CT


def test_corrupt_volume_files() -> None:
    with pytest.raises(DataError, match="not a NIfTI"):
        decode_volume_file(b"plain text", "notes.txt", LIMITS)
    with pytest.raises(DataError, match="gzip"):
        decode_volume_file(b"\x1f\x8b\x08\x00garbage", "x.nii.gz", LIMITS)
    with pytest.raises(DataError, match="truncated"):
        decode_volume_file(gzip.compress(b"\x5c\x01\x00\x00"), "x.nii.gz", LIMITS)
    with pytest.raises(DataError, match="empty"):
        decode_volume_file(b"", "x.nii.gz", LIMITS)


def test_dicom_zip_with_nested_folder(synth_root: Path) -> None:
    series = synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(series.iterdir()):
            archive.write(path, arcname=f"export/CT/{path.name}")
    volume = decode_dicom_zip(buffer.getvalue(), LIMITS)
    assert volume.modality is Modality.CT
    assert volume.shape[0] == len(list(series.iterdir()))
    assert decode_dicom_zip(zip_dicom_series(series), LIMITS).geometry == volume.geometry


def test_bad_zips() -> None:
    with pytest.raises(DataError, match="not a valid zip"):
        decode_dicom_zip(b"PK\x03\x04nope", LIMITS)
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(DataError, match="empty"):
        decode_dicom_zip(empty.getvalue(), LIMITS)


@pytest.mark.parametrize("fmt", ["nifti", "raw"])
def test_label_encodings_round_trip(fmt: str) -> None:
    labels = _volume().with_array(
        np.random.default_rng(1).integers(0, 5, (5, 16, 12)).astype(np.uint8)
    )
    data = encode_labels(labels, fmt)
    back = decode_labels(data, fmt, list(labels.shape), labels.geometry, "CT")
    np.testing.assert_array_equal(back.array, labels.array)


def test_png_zip_labels() -> None:
    labels = _volume().with_array(np.ones((5, 16, 12), np.uint8))
    archive = zipfile.ZipFile(io.BytesIO(encode_labels(labels, "png-zip")))
    assert archive.namelist() == [f"results{i:03d}.png" for i in range(1, 6)]
    with pytest.raises(DataError, match="output_format"):
        encode_labels(labels, "gif")


def test_clients_compress_only_off_this_machine() -> None:
    from organseg.serve.client import GrpcClient, HttpClient, is_loopback

    assert is_loopback("127.0.0.1:9000")
    assert is_loopback("http://localhost:8000")
    assert is_loopback("http://[::1]:8000/")
    assert not is_loopback("gpu-node:9000")
    assert not is_loopback("https://10.0.0.2:8000")
    assert not HttpClient("http://127.0.0.1:8000").compress
    assert HttpClient("http://segment.example.org").compress
    assert GrpcClient("127.0.0.1:1", compress=True).compress


def test_png_zip_carries_only_chaos_organs_at_their_chaos_values() -> None:
    from organseg.labels import LabelSet, chaos_label_set
    from organseg.serve.wire import png_zip_problem

    chaos = chaos_label_set()
    assert png_zip_problem(chaos) is None
    assert png_zip_problem(LabelSet((chaos["spleen"],))) is None  # a CHAOS subset keeps its grey
    swapped = LabelSet.from_names(["spleen", "liver"])  # spleen 1, liver 2: CHAOS greys would lie
    assert "no grey level for spleen=1, liver=2 of" in (png_zip_problem(swapped) or "")
    extra = LabelSet.from_names(["liver", "right_kidney", "left_kidney", "spleen", "pancreas"])
    assert "no grey level for pancreas=5 of" in (png_zip_problem(extra) or "")


def test_a_served_answer_lists_labels_in_the_models_order_whatever_order_the_map_arrived_in() -> (
    None
):
    """gRPC maps carry no order: the client puts the labels back in the model's order (by value)."""
    import zlib

    from organseg.serve.client import _prediction

    result = {
        "spacing": [1.0, 1.0, 1.0], "origin": [0.0, 0.0, 0.0],
        "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1], "output_format": "raw", "shape": [1, 2, 2],
        "modality": "CT", "modality_reason": "test", "members": ["m"],
        "volumes_ml": {"aorta": 1.0, "spleen": 2.0, "liver": 3.0},
        "label_values": {"liver": 6, "spleen": 1, "aorta": 8},
        "uncertainty": {}, "timings_s": {},
    }  # fmt: skip
    labels = zlib.compress(bytes([0, 1, 6, 8]))
    prediction = _prediction(result, labels)
    assert prediction.organs == ["spleen", "liver", "aorta"]
    assert list(prediction.volumes_ml) == ["spleen", "liver", "aorta"]
    assert prediction.volumes_ml["liver"] == 3.0
