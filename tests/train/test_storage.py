"""Run storage keeps bytes as they are: a ``.gz`` name (a ``.nii.gz`` volume, a gzipped checkpoint)
is neither gzipped again on writing nor un-gzipped on reading, whatever pyarrow.fs would detect from
the name, on a local path, a ``file://`` URI and S3 (moto's server on loopback)."""

from __future__ import annotations

import gzip
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.train import storage
from organseg.uri import open_uri
from tests.batch.conftest import S3Server


def _nifti_gz(folder: Path) -> bytes:
    """A small ``.nii.gz`` as SimpleITK writes it: gzip bytes."""
    path = folder / "source" / "volume.nii.gz"
    path.parent.mkdir(parents=True)
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path), useCompression=True)
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b"  # gzip: what a (de)compressing stream would change
    return data


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_gz_bytes_round_trip_unchanged(tmp_path: Path, as_uri: bool) -> None:
    data = _nifti_gz(tmp_path)
    target = tmp_path / "runs" / "member-0" / "volume.nii.gz"
    location = target.as_uri() if as_uri else str(target)
    storage.write_bytes(location, data)
    assert target.read_bytes() == data  # stored as given, not gzipped a second time
    assert storage.read_bytes(location) == data
    written = tmp_path / "written" / "checkpoint.pt.gz"  # stored by something else
    written.parent.mkdir()
    written.write_bytes(gzip.compress(b"weights"))
    there = written.as_uri() if as_uri else str(written)
    assert storage.read_bytes(there) == written.read_bytes()  # read as stored, not un-gzipped
    with open_uri(written.as_uri()) as stream:
        assert stream.read() == written.read_bytes()


def test_gz_bytes_round_trip_unchanged_on_s3(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.environ.items():
        monkeypatch.setenv(name, value)
    data = _nifti_gz(tmp_path)
    s3_server.put("organseg-runs", "keep", b"")  # the bucket
    uri = "s3://organseg-runs/train/member-0/volume.nii.gz"
    storage.write_bytes(uri, data)
    stored = f"{s3_server.endpoint}/organseg-runs/train/member-0/volume.nii.gz"
    with urllib.request.urlopen(stored, timeout=30) as answer:  # the object as S3 holds it
        assert answer.read() == data
    assert storage.read_bytes(uri) == data
    other = s3_server.put("organseg-runs", "train/checkpoint.pt.gz", gzip.compress(b"weights"))
    assert storage.read_bytes(other) == gzip.compress(b"weights")  # read as stored
    with open_uri(other) as stream:
        assert stream.read() == gzip.compress(b"weights")
