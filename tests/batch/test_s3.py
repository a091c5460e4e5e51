"""CSV manifests of ``s3://`` URIs, read through pyarrow.fs from a real S3 API (moto's server on
loopback): the volume is segmented as its local copy is, a missing object or bucket is a refused row
naming the URI, and no credential shows anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from organseg.batch.discover import discover
from organseg.batch.records import load_records
from organseg.batch.run import plan_run
from organseg.batch.work import make_predictor, predict_stage, read_stage, write_stage
from organseg.errors import DataError
from tests.batch.conftest import S3_KEY, S3_SECRET, Archive, S3Server
from tests.batch.test_work import predict_local

BUCKET = "organseg-archive"


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for name, value in s3_server.environ.items():
        monkeypatch.setenv(name, value)
    return s3_server


def test_a_manifest_of_s3_uris(
    s3: S3Server, archive: Archive, batch_model: Path, tmp_path: Path
) -> None:
    assert archive.nifti is not None
    uri = s3.put(BUCKET, "volumes/ct4.nii.gz", archive.nifti.read_bytes())
    with_credentials = uri.replace("s3://", f"s3://{S3_KEY}:{S3_SECRET}@").replace(
        "ct4", "ct4-again"
    )
    s3.put(BUCKET, "volumes/ct4-again.nii.gz", archive.nifti.read_bytes())
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        f"uri\n{uri}\ns3://{BUCKET}/volumes/absent.nii.gz\ns3://no-such-bucket/ct.nii.gz\n"
        f"{with_credentials}\n"
    )
    out = tmp_path / "out"
    plan = plan_run(manifest, out, batch_model, device="cpu")
    backend = make_predictor(plan.settings)
    rows = {}
    for carrier in plan.todo:
        carrier = predict_stage(read_stage(carrier, plan.settings), backend, plan.settings.out)
        row = write_stage(carrier, plan.settings).row
        rows[row["source"]] = row
    assert sorted(rows) == sorted(
        [uri, f"s3://{BUCKET}/volumes/absent.nii.gz", "s3://no-such-bucket/ct.nii.gz",
         f"s3://{BUCKET}/volumes/ct4-again.nii.gz"]
    )  # fmt: skip
    theirs = sitk.GetArrayFromImage(
        sitk.ReadImage(str(predict_local(batch_model, archive.nifti, tmp_path / "local.nii.gz")))
    )
    for done in (uri, f"s3://{BUCKET}/volumes/ct4-again.nii.gz"):
        assert rows[done]["status"] == "done", rows[done]["reason"]
        ours = sitk.GetArrayFromImage(sitk.ReadImage(rows[done]["output"]))
        assert np.array_equal(ours, theirs)
    absent = rows[f"s3://{BUCKET}/volumes/absent.nii.gz"]
    assert absent["status"] == "refused"
    assert absent["reason"] == f"s3://{BUCKET}/volumes/absent.nii.gz: no such object"
    bucket = rows["s3://no-such-bucket/ct.nii.gz"]
    assert bucket["status"] == "refused"
    assert bucket["reason"] == "s3://no-such-bucket/ct.nii.gz: no such bucket 'no-such-bucket'"
    written = json.dumps(rows) + json.dumps(load_records(out))
    written += "".join(p.read_text() for p in out.rglob("*.json"))
    assert S3_SECRET not in written
    assert S3_KEY not in written


def test_a_manifest_read_from_s3(s3: S3Server, archive: Archive) -> None:
    assert archive.nifti is not None
    uri = s3.put(BUCKET, "lists/ct4.nii.gz", archive.nifti.read_bytes())
    listing = s3.put(BUCKET, "lists/batch.csv", f"path\nct4.nii.gz\n{uri}\n".encode())
    (item,) = discover(listing)  # the relative entry lies beside the manifest: the same object
    assert (item.kind, item.source) == ("uri", uri)
    with pytest.raises(DataError, match=f"s3://{BUCKET}/lists/none.csv: no such object"):
        discover(f"s3://{BUCKET}/lists/none.csv")
    with pytest.raises(DataError, match="must be a CSV manifest"):
        discover(f"s3://{BUCKET}/lists/")
