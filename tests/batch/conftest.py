"""An archive as a PACS export writes it, a CT-only model, and a model that stacks a two-phase
dataset's channels, shared by the batch tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import one_member_ct_model, t1_stack_model


@pytest.fixture(scope="session")
def batch_model(tmp_path_factory: pytest.TempPathFactory, archive: Archive) -> Path:
    """An untrained CT-only model whose head is rescaled to a mask that depends on every slice."""
    return one_member_ct_model(tmp_path_factory.mktemp("batch-model") / "m", archive.sources["ct1"])


@dataclass
class Archive:
    """The tree, and for each series the synthetic folder it came from (what ``predict`` reads)."""

    root: Path
    sources: dict[str, Path] = field(default_factory=dict)
    good_ct: list[str] = field(default_factory=list)  # names of series that must be segmented
    mr: list[str] = field(default_factory=list)
    refused_dicom: list[str] = field(default_factory=list)  # corrupt, ambiguous geometry
    nifti: Path | None = None
    series_count: int = 0


def _copy_series(source: Path, target: Path, **changes: object) -> list[Path]:
    """The series in ``source`` copied under ``target``, each file named by its SOPInstanceUID."""
    import pydicom

    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            setattr(ds, key, value)
        if changes:
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = target / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(out)
        written.append(out)
    return written


def build_archive(root: Path, ct: int = 6, mr: int = 3) -> Archive:
    """A PACS-export-like tree: ``PAT<k>/<study>/<series>/<SOPInstanceUID>.dcm``, with ``ct`` CT and
    ``mr`` × 3 MR series, a CT series exported twice (a duplicate), a corrupt series (a truncated
    file), a series with two different images at one position (ambiguous geometry), a NIfTI file and
    a stray text file."""
    import pydicom

    from organseg.io import read_dicom_series
    from organseg.io.files import write_volume_file
    from organseg.synth import write_dataset

    synth = root / "synth"
    write_dataset(synth, ct=ct, mr=mr, size=64, slices=12, seed=11)
    tree = root / "archive"
    archive = Archive(tree)
    for k in range(1, ct + 1):
        name = f"ct{k}"
        archive.sources[name] = synth / "Train_Sets" / "CT" / str(k) / "DICOM_anon"
        _copy_series(archive.sources[name], tree / f"PAT{k}" / "study1" / f"s{k}")
        archive.good_ct.append(name)
    for k in range(1, mr + 1):
        case = synth / "Train_Sets" / "MR" / str(k)
        for kind, folder in (
            ("in", case / "T1DUAL" / "DICOM_anon" / "InPhase"),
            ("out", case / "T1DUAL" / "DICOM_anon" / "OutPhase"),
            ("t2", case / "T2SPIR" / "DICOM_anon"),
        ):
            name = f"mr{k}-{kind}"
            archive.sources[name] = folder
            # several series per study, all in one folder as some exports do
            _copy_series(folder, tree / f"MRPAT{k}" / "study")
            archive.mr.append(name)
    # a duplicate: CT 1 exported a second time into another folder (same UIDs)
    _copy_series(archive.sources["ct1"], tree / "PAT1" / "study1-again" / "x")
    # a corrupt series: a copy of CT 2 under new UIDs with one file truncated
    files = _copy_series(
        archive.sources["ct2"], tree / "BROKEN" / "s", SeriesInstanceUID=pydicom.uid.generate_uid()
    )
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) // 3])
    archive.refused_dicom.append("corrupt")
    # ambiguous geometry: a copy of CT 3 whose slice 4 claims slice 3's position
    uid = pydicom.uid.generate_uid()
    files = _copy_series(archive.sources["ct3"], tree / "AMBIG" / "s", SeriesInstanceUID=uid)
    by_instance = {int(pydicom.dcmread(f).InstanceNumber): f for f in files}
    third = pydicom.dcmread(by_instance[3])
    fourth = pydicom.dcmread(by_instance[4])
    fourth.ImagePositionPatient = third.ImagePositionPatient
    fourth.save_as(by_instance[4])
    archive.refused_dicom.append("ambiguous")
    # a NIfTI volume beside the DICOM, and a stray file
    archive.nifti = tree / "volumes" / "ct4.nii.gz"
    archive.nifti.parent.mkdir(parents=True)
    write_volume_file(read_dicom_series(archive.sources["ct4"]), archive.nifti)
    (tree / "PAT1" / "notes.txt").write_text("not an image\n")
    archive.series_count = ct + 3 * mr + len(archive.refused_dicom) + 1
    shutil.rmtree(synth / "Test_Sets", ignore_errors=True)
    return archive


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Read-only!"""
    return build_archive(tmp_path_factory.mktemp("batch"))


@dataclass
class StackArchive:
    """A tree for a model that stacks T1 in- and out-of-phase: ``root``, and the MR case folders
    (CHAOS layout, what ``predict --local`` stacks) of the studies that must be segmented."""

    root: Path
    paired: dict[str, Path] = field(default_factory=dict)  # name → MR case folder
    series_count: int = 0


def build_stack_archive(root: Path, archive: Archive) -> StackArchive:
    """Three MR studies of the archive's synthetic cases, as a PACS export writes them: study 1's
    T1 in-phase, out-of-phase and T2-SPIR as three series in one folder; study 2's two T1 echoes as
    ONE dual-echo series (one SeriesInstanceUID and SeriesDescription, told apart by EchoTime) in
    two folders; study 3's T1 in-phase alone (its partner missing)."""
    import pydicom

    tree = root / "stack-archive"
    stack = StackArchive(tree)
    for kind in ("in", "out", "t2"):
        _copy_series(archive.sources[f"mr1-{kind}"], tree / "STK1" / "study")
    stack.paired["separate"] = archive.sources["mr1-in"].parents[2]
    in_phase = archive.sources["mr2-in"]
    uid = str(pydicom.dcmread(next(in_phase.glob("*.dcm"))).SeriesInstanceUID)
    for kind in ("in", "out"):
        _copy_series(
            archive.sources[f"mr2-{kind}"],
            tree / "STK2" / "study" / kind,
            SeriesInstanceUID=uid,
            SeriesDescription="T1DUAL",
        )
    stack.paired["dual-echo"] = archive.sources["mr2-in"].parents[2]
    _copy_series(archive.sources["mr3-in"], tree / "STK3" / "study")
    stack.series_count = 4  # study 1 stacked + its T2-SPIR alone, study 2 stacked, study 3 refused
    return stack


@pytest.fixture(scope="session")
def stack_archive(tmp_path_factory: pytest.TempPathFactory, archive: Archive) -> StackArchive:
    """Read-only!"""
    return build_stack_archive(tmp_path_factory.mktemp("batch-stack"), archive)


@pytest.fixture(scope="session")
def batch_stack_model(tmp_path_factory: pytest.TempPathFactory, archive: Archive) -> Path:
    """The stacking tests' T1 in+out (and CT) model, rescaled on the archive's first cases."""
    return t1_stack_model(
        tmp_path_factory.mktemp("batch-stack-model"),
        archive.sources["ct1"],
        archive.sources["mr1-in"],
        archive.sources["mr1-out"],
    )


# -- a model that stacks a dataset's channels (CT arterial + venous) ------------------------------------


@pytest.fixture(scope="session")
def stacked_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The two-channel model trained a few steps on the two-phase dataset (Ray-free trainer core),
    and that dataset: ``(model directory, dataset root)``. Read-only!"""
    from tests.train.test_stacked_channels import train_stacked

    return train_stacked(tmp_path_factory.mktemp("batch-phases"))


@pytest.fixture(scope="session")
def model_and_cases(
    stacked_model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The two-channel model, and a dataset whose ``imagesTs`` holds case 1 whole and case 2 without
    its venous channel. Read-only!"""
    model_dir, dataset = stacked_model
    cases = tmp_path_factory.mktemp("batch-phase-cases") / "cases"
    (cases / "imagesTs").mkdir(parents=True)
    for name in ("synth_001_0000", "synth_001_0001", "synth_002_0000"):
        shutil.copy(dataset / "imagesTr" / f"{name}.nii.gz", cases / "imagesTs")
    return model_dir, cases


# -- a real S3 API on loopback (moto's server) --------------------------------------------------------

#: What the tests sign with: moto takes any credentials; the secret must never show in a row or message.
S3_KEY, S3_SECRET = "organseg-test-key", "organseg-test-secret-8c1f"


@dataclass
class S3Server:
    """A moto S3 server on a free loopback port; ``environ`` points pyarrow (and so organseg) at it."""

    endpoint: str

    @property
    def environ(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Upload ``data`` as it is (creating the bucket) with plain S3 REST calls; returns its
        ``s3://`` URI. (pyarrow's writer uploads in parts, whose completion moto's server does not
        always answer as pyarrow expects; reading is what is under test.)"""
        import urllib.request

        for url, body in (
            (f"{self.endpoint}/{bucket}", b""),
            (f"{self.endpoint}/{bucket}/{key}", data),
        ):
            # a binary body must not be taken for a form (urllib's default content type)
            headers = {"Content-Type": "application/octet-stream"}
            request = urllib.request.Request(url, body, headers, method="PUT")
            urllib.request.urlopen(request, timeout=30).close()
        return f"s3://{bucket}/{key}"


def _moto_command() -> list[str]:
    import importlib.util
    import sys

    if importlib.util.find_spec("moto") is not None:
        return [sys.executable, "-m", "moto.server"]
    found = shutil.which("moto_server")
    if found is not None:
        return [found]
    pytest.skip("moto's S3 server not found: install the dev extra (moto[server])")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = subprocess.Popen(
        [*_moto_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {endpoint}") from None
                time.sleep(0.3)
        yield S3Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=20)
