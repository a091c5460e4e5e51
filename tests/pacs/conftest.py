"""A real PACS (Orthanc with its DICOMweb plugin) on free loopback ports, a small CT model, and tools to
copy, re-encode and send series. Orthanc comes from the Debian packages ``orthanc`` and
``orthanc-dicomweb`` (installed by .ci/run); where it is missing the tests skip with that reason, except
under ``ORGANSEG_REQUIRE_ORTHANC=1`` (CI), where they fail."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from tests.conftest import mr_series_folder, one_member_ct_model, rescale_head, t1_stack_model

ORTHANC_AET = "ORTHANC"
DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
#: gdcmconv options per compressed transfer syntax (all lossless).
CODECS = {"jpeg-ls": "--jpegls", "jpeg2000": "--j2k", "rle": "--rle"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _missing(what: str) -> None:
    message = f"{what}; install the Debian packages orthanc orthanc-dicomweb libgdcm-tools"
    if os.environ.get("ORGANSEG_REQUIRE_ORTHANC") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _dicomweb_plugin() -> Path | None:
    for folder in DICOMWEB_PLUGIN_DIRS:
        for path in sorted(Path(folder).glob("libOrthancDicomWeb.so*")):
            return path
    return None


@dataclass
class Orthanc:
    """A running Orthanc: REST at ``url``, DICOMweb at ``dicomweb``, DICOM at ``dicom_port``."""

    url: str
    dicomweb: str
    dicom_port: int
    process: subprocess.Popen
    log: Path

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def upload(self, paths: list[Path]) -> str:
        """Store files through REST; returns Orthanc's id of their (last) series."""
        with self.http as http:
            series = ""
            for path in paths:
                response = http.post("/instances", content=path.read_bytes())
                response.raise_for_status()
                series = response.json()["ParentSeries"]
        return series

    def register(self, name: str, ae_title: str, port: int) -> None:
        with self.http as http:
            body = {"AET": ae_title, "Host": "127.0.0.1", "Port": port}
            http.put(f"/modalities/{name}", json=body).raise_for_status()

    def send_series(self, modality: str, series_id: str) -> None:
        """Orthanc forwards a stored series to a registered modality by C-STORE."""
        with self.http as http:
            body = {"Resources": [series_id], "Synchronous": True}
            http.post(f"/modalities/{modality}/store", json=body).raise_for_status()

    def segs_for(self, source_series_uid: str, study_uid: str) -> list[pydicom.Dataset]:
        """Every DICOM-SEG in ``study_uid`` that references ``source_series_uid``."""
        found = []
        with self.http as http:
            query = {
                "Level": "Instance",
                "Query": {"Modality": "SEG", "StudyInstanceUID": study_uid},
                "Expand": False,
            }
            for instance in http.post("/tools/find", json=query).json():
                data = http.get(f"/instances/{instance}/file").content
                ds = pydicom.dcmread(io.BytesIO(data))
                refs = [r.SeriesInstanceUID for r in ds.get("ReferencedSeriesSequence", [])]
                if source_series_uid in refs:
                    found.append(ds)
        return found

    def wait_for_segs(self, source_series_uid: str, study_uid: str, timeout: float = 90) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            segs = self.segs_for(source_series_uid, study_uid)
            if segs:
                return segs
            time.sleep(0.25)
        raise AssertionError(f"no DICOM-SEG for the series reached Orthanc within {timeout} s")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with DICOMweb on, temporary storage, stopped after the session."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    plugin = _dicomweb_plugin()
    if binary is None:
        _missing("Orthanc is not installed")
    if plugin is None:
        _missing("the Orthanc DICOMweb plugin is not installed")
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "organseg-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = root / "orthanc.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=stream, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/system", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Orthanc did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    try:
        yield Orthanc(url, f"{url}/dicom-web", dicom_port, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# -- a small CT model whose output depends on the image ------------------------------------------------
@pytest.fixture(scope="session")
def ct_model(tmp_path_factory: pytest.TempPathFactory, chaos_ct_case: Path) -> Path:
    """A one-member CT model directory whose mask depends on the real case's pixels (no training)."""
    return one_member_ct_model(tmp_path_factory.mktemp("ct-model"), chaos_ct_case / "DICOM_anon")


@pytest.fixture(scope="session")
def ct_files(chaos_ct_case: Path) -> list[Path]:
    """The real CHAOS CT case's files (``synth_ct_files``: the synthetic CT's)."""
    return sorted((chaos_ct_case / "DICOM_anon").glob("*.dcm"))


@pytest.fixture(scope="session")
def reference_mask(ct_model: Path, chaos_ct_case: Path, tmp_path_factory) -> np.ndarray:
    """``organseg predict --local`` on the real case, as one mask per source file in file-name order."""
    import SimpleITK as sitk

    from organseg.cli import main

    out = tmp_path_factory.mktemp("reference") / "labels.nii.gz"
    argv = ["predict", str(chaos_ct_case / "DICOM_anon"), "-o", str(out), "--local", str(ct_model)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--device", "cpu"])
    assert exit_info.value.code == 0
    image = sitk.ReadImage(str(out))
    labels = sitk.GetArrayFromImage(image) > 0
    # back to the files' name order, slice by slice through each file's ImagePositionPatient
    rows = []
    for path in sorted((chaos_ct_case / "DICOM_anon").glob("*.dcm")):
        position = pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient
        z = image.TransformPhysicalPointToContinuousIndex([float(v) for v in position])[2]
        assert abs(z - round(z)) < 0.05
        rows.append(labels[round(z)])
    mask = np.stack(rows)
    assert 0.01 < mask.mean() < 0.5, "the test model must predict a non-trivial mask"
    return mask


# -- series copies -----------------------------------------------------------------------------------
@dataclass
class SeriesCopy:
    """A copy of a series under new UIDs; ``files``/``sop_uids`` in the source's file-name order."""

    files: list[Path]
    study_uid: str
    series_uid: str
    sop_uids: list[str]


def copy_series(
    files: list[Path],
    folder: Path,
    tag: str,
    codec: str | None = None,
    patient: str | None = None,
) -> SeriesCopy:
    """``files`` under new (deterministic) UIDs, optionally re-encoded losslessly by gdcmconv and with
    PatientName/PatientID set to ``patient``."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid(entropy_srcs=[tag, "study"])
    series = generate_uid(entropy_srcs=[tag, "series"])
    if codec is not None:
        gdcmconv = shutil.which("gdcmconv")
        if gdcmconv is None:
            _missing("gdcmconv (libgdcm-tools) is not installed")

        def encode(path: Path) -> None:
            subprocess.run(
                [gdcmconv, CODECS[codec], str(path), str(folder / path.name)],
                check=True,
                capture_output=True,
            )

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(encode, files))
    out, uids = [], []
    for path in files:
        target = folder / path.name
        ds = pydicom.dcmread(target if codec else path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[tag, str(ds.SOPInstanceUID)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if patient is not None:
            ds.PatientName, ds.PatientID = f"{patient}^Test", patient
            ds.PatientBirthDate = "19700101"
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
        uids.append(str(ds.SOPInstanceUID))
    return SeriesCopy(out, study, series, uids)


def send_files(port: int, files: list[Path], ae_title: str = "ORGANSEG") -> None:
    """C-STORE ``files`` to a node on loopback, each in its own transfer syntax."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in files]
    ae = AE(ae_title="TESTSCU")
    for pair in sorted(
        {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
    ):
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, "the listener refused the association"
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status, "no C-STORE answer"
            assert status.Status == 0, f"C-STORE answered {status}"
    finally:
        assoc.release()


def seg_mask(seg: pydicom.Dataset, sop_uids: list[str]) -> np.ndarray:
    """The SEG as one boolean mask over the source instances, in the given order."""
    import highdicom as hd

    decoded = hd.seg.Segmentation.from_dataset(seg)
    pixels = decoded.get_pixels_by_source_instance(
        source_sop_instance_uids=sop_uids,
        combine_segments=True,
        skip_overlap_checks=True,
        assert_missing_frames_are_empty=True,
    )
    return pixels > 0


# -- the listener as its own process ------------------------------------------------------------------
@dataclass
class ListenerProcess:
    process: subprocess.Popen
    port: int
    log: Path
    store: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_listener(store: Path, log: Path, *args: str) -> ListenerProcess:
    """``organseg dicom listen --port 0`` in a subprocess; returns once it logs its bound port."""
    command = [sys.executable, "-m", "organseg.cli", "dicom", "listen", "--host", "127.0.0.1"]
    command += ["--port", "0", "--store", str(store), *args]
    offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
    with log.open("ab") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with log.open("rb") as stream:
            stream.seek(offset)
            text = stream.read().decode(errors="replace")
        for line in text.splitlines():
            if "listening as" in line and " on 127.0.0.1:" in line:
                port = int(line.split(" on 127.0.0.1:")[1].split(";")[0])
                return ListenerProcess(process, port, log, store)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the listener did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def compressed_copies(ct_files: list[Path], tmp_path_factory) -> dict[str, SeriesCopy]:
    """The real case re-encoded as JPEG-LS lossless, JPEG 2000 lossless and RLE (new UIDs each)."""
    root = tmp_path_factory.mktemp("compressed")
    return {codec: copy_series(ct_files, root / codec, f"codec-{codec}", codec) for codec in CODECS}


@pytest.fixture(scope="session")
def pacs_tools():
    """The helpers above, for test modules (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        copy_series=copy_series,
        send_files=send_files,
        seg_mask=seg_mask,
        start_listener=start_listener,
        free_port=free_port,
    )


# -- a model that stacks T1 in- and out-of-phase (and segments CT alone) --------------------------------
@pytest.fixture(scope="session")
def stack_model(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> Path:
    """An untrained model directory with ``t1_mode: stack``: a 2-channel T1 in+out member and a CT
    member, each rescaled to a non-trivial mask on the synthetic case 1."""
    return t1_stack_model(
        tmp_path_factory.mktemp("stack-model"),
        synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon",
        *(mr_series_folder(synth_root, 1, k) for k in ("in", "out")),
    )


def copy_study(folders: list[Path], target: Path, tag: str) -> list[SeriesCopy]:
    """The series in ``folders`` under new UIDs, all in ONE new study (unlike :func:`copy_series`,
    which gives each copy its own study)."""
    from pydicom.uid import generate_uid

    study = generate_uid(entropy_srcs=[tag, "study"])
    copies = []
    for k, folder in enumerate(folders):
        series = generate_uid(entropy_srcs=[tag, "series", str(k)])
        out, uids = [], []
        (target / str(k)).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[tag, str(ds.SOPInstanceUID)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(target / str(k) / path.name, enforce_file_format=True)
            out.append(target / str(k) / path.name)
            uids.append(str(ds.SOPInstanceUID))
        copies.append(SeriesCopy(out, study, series, uids))
    return copies


def mask_by_instance(labels, files: list[Path]) -> np.ndarray:
    """A label volume as one boolean mask per file (in ``files``' order), each file's slice found by
    its ImagePositionPatient on the volume's grid."""
    image = labels.to_sitk()
    array = np.asarray(labels.array) > 0
    rows = []
    for path in files:
        position = pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient
        z = image.TransformPhysicalPointToContinuousIndex([float(v) for v in position])[2]
        assert abs(z - round(z)) < 0.05
        rows.append(array[round(z)])
    return np.stack(rows)


@pytest.fixture(scope="session")
def stack_tools():
    """Helpers for the stacking tests (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(copy_study=copy_study, mask_by_instance=mask_by_instance)


# -- a model that stacks T1 in, T1 out and the registered T2-SPIR (and may serve T2-SPIR alone) --------


def _t2_stack_config(name: str, with_t2_member: bool):
    from organseg.config import parse_config

    small = {"arch": "attention_unet", "kwargs": {"base_channels": 4, "depth": 3}}
    members = [{"name": "t1", **small, "in_channels": 3, "modalities": ["MR-T1-in"]}]
    if with_t2_member:
        members.append({"name": "t2", **small, "modalities": ["MR-T2SPIR"]})
    return parse_config(
        {
            "name": name,
            "task": 3,
            "dataset": {"synthetic": {"mr": 1}},
            "preprocess": {"size": 64, "t1_mode": "stack", "t2_channel": True},
            "members": members,
        }
    )


@pytest.fixture(scope="session")
def t2_stack_model(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> Path:
    """An untrained model directory with ``t1_mode: stack`` and ``t2_channel: true``: a 3-channel
    member on MR-T1-in (T1 in, T1 out, registered T2) and a member on MR-T2SPIR alone, each rescaled
    to a non-trivial mask on the synthetic MR case 1."""
    from organseg.ensemble.predictor import prepare_input
    from organseg.ensemble.spec import load_spec, write_untrained_model_dir
    from organseg.io.dicom import read_dicom_series

    config = _t2_stack_config("pacs-stack-t2", with_t2_member=True)
    model_dir = write_untrained_model_dir(config, tmp_path_factory.mktemp("t2-stack-model"))
    spec = load_spec(model_dir)
    t1_in, t1_out = (read_dicom_series(mr_series_folder(synth_root, 1, k)) for k in ("in", "out"))
    t2 = read_dicom_series(mr_series_folder(synth_root, 1, "t2"))
    _, stacked = prepare_input(spec, t1_in, None, t1_out, t2)
    rescale_head(model_dir, spec.members[0], stacked)
    _, alone = prepare_input(spec, read_dicom_series(mr_series_folder(synth_root, 1, "t2")))
    rescale_head(model_dir, spec.members[1], alone)
    return model_dir


@pytest.fixture(scope="session")
def t2_channel_model(tmp_path_factory: pytest.TempPathFactory, t2_stack_model: Path) -> Path:
    """:func:`t2_stack_model` without its T2-SPIR member: T2-SPIR is only ever a channel. Its T1
    member's weights are the same file, so its T1 answers are the same."""
    from organseg.ensemble.spec import load_spec, write_untrained_model_dir

    config = _t2_stack_config("pacs-stack-t2-channel", with_t2_member=False)
    model_dir = write_untrained_model_dir(config, tmp_path_factory.mktemp("t2-channel-model"))
    (entry,) = load_spec(model_dir).members
    shutil.copyfile(t2_stack_model / entry.weights, model_dir / entry.weights)
    return model_dir
