"""Several DICOM series in one upload: grouped by SeriesInstanceUID, each decided by its headers, and
assembled into the stacked input a T1-stacking model needs; what is missing, doubled, mixed or
undecidable is refused naming the series by SeriesNumber/InstanceNumber, never a file name or an ID."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from organseg.ensemble.assembly import SeriesInput, assemble, series_label
from organseg.ensemble.routing import ModalityError
from organseg.errors import DataError, RequestTooLarge
from organseg.io import read_dicom_series
from organseg.io.volume import Modality, Volume
from organseg.preprocess.config import PreprocessConfig
from organseg.serve.wire import WireLimits, decode_dicom_zip_series
from tests.conftest import MR_SERIES, mr_series_folder, zip_bytes


def _entries(folder: Path, prefix: str, edit=None) -> list[tuple[str, bytes]]:
    out = []
    for path in sorted(folder.glob("*.dcm")):
        if edit is None:
            out.append((f"{prefix}/{path.name}", path.read_bytes()))
            continue
        ds = pydicom.dcmread(path)
        edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((f"{prefix}/{path.name}", buffer.getvalue()))
    return out


def _items(data: bytes, limits: WireLimits | None = None) -> list[SeriesInput]:
    volumes = decode_dicom_zip_series(data, limits or WireLimits())
    return [SeriesInput(v, series_label(v, "file")) for v in volumes]


def _spec(t1_mode: str = "stack", t2_channel: bool = True) -> SimpleNamespace:
    preprocess = PreprocessConfig(size=64, t1_mode=t1_mode, t2_channel=t2_channel)
    return SimpleNamespace(name="mc", preprocess=preprocess)


@pytest.fixture(scope="module")
def patient(synth_root: Path) -> dict[str, list[tuple[str, bytes]]]:
    """Case 1's three series as zip entries under patient-named folders (names must never leak)."""
    return {
        k: _entries(mr_series_folder(synth_root, 1, k), f"DOE^JANE/{k}-scan") for k in MR_SERIES
    }


def test_zip_of_three_series_reads_each_like_its_folder(synth_root: Path, patient) -> None:
    items = _items(zip_bytes(patient["t2"] + patient["out"] + patient["in"]))
    assert len(items) == 3
    for item in items:
        kind = {
            Modality.MR_T1_IN: "in",
            Modality.MR_T1_OUT: "out",
            Modality.MR_T2SPIR: "t2",
        }[item.volume.modality]
        expected = read_dicom_series(mr_series_folder(synth_root, 1, kind))
        np.testing.assert_array_equal(item.volume.array, expected.array)
        assert item.volume.geometry == expected.geometry
        assert item.label.startswith("SeriesNumber ")
        assert "InstanceNumber" in item.label
        assert "scan" not in item.label
    assembled = assemble(items, _spec())
    assert assembled.modality is Modality.MR_T1_IN
    assert assembled.image.modality is Modality.MR_T1_IN
    assert assembled.partner is not None
    assert assembled.partner.modality is Modality.MR_T1_OUT
    assert assembled.t2 is not None
    assert assembled.t2.modality is Modality.MR_T2SPIR
    assert [s["role"] for s in assembled.series] == ["image", "out_phase", "t2"]
    assert "EchoTime" in assembled.series[0]["modality_reason"]
    assert "grid" in assembled.answers_for


def test_dual_echo_stored_as_one_series_is_split_by_echo_time(patient) -> None:
    uid = pydicom.dcmread(io.BytesIO(patient["in"][0][1])).SeriesInstanceUID

    def same_series(ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID = uid

    out = [(n, d) for n, d in patient["out"]]
    edited = _entries_from_bytes(out, same_series)
    items = _items(zip_bytes(patient["in"] + edited))
    assert sorted(i.volume.modality.value for i in items) == ["MR-T1-in", "MR-T1-out"]
    assert all("EchoTime" in i.label for i in items)
    assert assemble(items, _spec(t2_channel=False)).partner is not None


def _entries_from_bytes(entries, edit) -> list[tuple[str, bytes]]:
    out = []
    for name, data in entries:
        ds = pydicom.dcmread(io.BytesIO(data))
        edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((name, buffer.getvalue()))
    return out


def test_missing_series_are_named_with_what_to_send(patient) -> None:
    with pytest.raises(ModalityError, match=r"not the T2-SPIR series.*'t2'") as missing_t2:
        assemble(_items(zip_bytes(patient["in"] + patient["out"])), _spec())
    assert "SeriesNumber" in str(missing_t2.value)
    with pytest.raises(ModalityError, match=r"not the T1 out-of-phase series.*out_phase"):
        assemble(_items(zip_bytes(patient["in"] + patient["t2"])), _spec())
    with pytest.raises(ModalityError, match="T1 in-phase series"):
        assemble(_items(zip_bytes(patient["out"] + patient["t2"])), _spec())
    # one T1 series alone on a stacking model: the same refusal, not a single-channel guess
    with pytest.raises(ModalityError, match="out-of-phase"):
        assemble(_items(zip_bytes(patient["in"])), _spec(t2_channel=False))
    # a T2 beside T1 that the model does not stack is not silently dropped
    with pytest.raises(DataError, match="t2_channel is off"):
        assemble(
            _items(zip_bytes(patient["in"] + patient["out"] + patient["t2"])),
            _spec(t2_channel=False),
        )
    # T2-SPIR alone goes to its own ensemble
    (only,) = _items(zip_bytes(patient["t2"]))
    assert assemble([only], _spec()).modality is Modality.MR_T2SPIR


def test_two_series_of_one_sequence_are_refused(patient) -> None:
    def copy(ds: pydicom.Dataset) -> None:
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".9"
        ds.SeriesNumber = 99
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"

    twin = [
        (n.replace("t2-scan", "t2-copy"), d) for n, d in _entries_from_bytes(patient["t2"], copy)
    ]
    items = _items(zip_bytes(patient["in"] + patient["out"] + patient["t2"] + twin))
    with pytest.raises(DataError, match=r"two T2-SPIR series: SeriesNumber \d+ .* SeriesNumber 99"):
        assemble(items, _spec())


def test_series_of_another_patient_or_study_are_refused_without_echoing_ids(
    synth_root: Path, patient
) -> None:
    other = _entries(mr_series_folder(synth_root, 2, "t2"), "other")
    items = _items(zip_bytes(patient["in"] + patient["out"] + other))
    with pytest.raises(DataError, match="not from one study: StudyInstanceUID differs") as exc:
        assemble(items, _spec())
    uids = {i.volume.meta["StudyInstanceUID"] for i in items}
    assert not any(uid in str(exc.value) for uid in uids)

    def other_patient(ds: pydicom.Dataset) -> None:
        ds.PatientID = "SOMEONE-ELSE-42"

    moved = _entries_from_bytes(patient["t2"], other_patient)
    with pytest.raises(DataError, match="not from one patient: PatientID differs") as exc:
        assemble(_items(zip_bytes(patient["in"] + patient["out"] + moved)), _spec())
    assert "SOMEONE" not in str(exc.value)
    assert "SYNTH" not in str(exc.value)


def test_a_series_of_unknown_sequence_is_named_not_guessed(patient) -> None:
    def anonymous_sequence(ds: pydicom.Dataset) -> None:
        for keyword in ("SeriesDescription", "ProtocolName", "SequenceName", "EchoTime"):
            if keyword in ds:
                delattr(ds, keyword)

    blank = _entries_from_bytes(patient["t2"], anonymous_sequence)
    items = _items(zip_bytes(patient["in"] + patient["out"] + blank))
    with pytest.raises(
        ModalityError, match=r"SeriesNumber \d+ \(InstanceNumber 1-\d+\): cannot tell the modality"
    ) as exc:
        assemble(items, _spec())
    assert "scan" not in str(exc.value)
    assert "DOE" not in str(exc.value)


def test_voxel_limit_counts_every_series_of_the_request(patient) -> None:
    data = zip_bytes(patient["in"] + patient["out"] + patient["t2"])
    one = decode_dicom_zip_series(zip_bytes(patient["in"]), WireLimits())[0]
    size = int(np.prod(one.shape))
    with pytest.raises(RequestTooLarge, match="voxels"):
        decode_dicom_zip_series(data, WireLimits(max_voxels=2 * size + size // 2))


def test_named_parts_share_the_request_voxel_limit(synth_root: Path, tmp_path: Path) -> None:
    """The out_phase/t2 parts are decoded within what the file part left of the voxel limit."""
    import SimpleITK as sitk

    from organseg.serve.router import _part_series

    t1 = read_dicom_series(mr_series_folder(synth_root, 1, "in"))
    t2 = read_dicom_series(mr_series_folder(synth_root, 1, "t2"))
    sitk.WriteImage(t2.to_sitk(), str(tmp_path / "t2.nii.gz"))
    part = (tmp_path / "t2.nii.gz").read_bytes()
    items = [SeriesInput(t1, "file", "file", "MR-T1-in")]
    size = int(np.prod(t1.shape))
    (found,) = _part_series({"t2": part}, items, WireLimits(max_voxels=3 * size))
    assert found.requested == "MR-T2SPIR"
    assert found.label == "the 't2' part"
    with pytest.raises(RequestTooLarge, match="part 't2'"):
        _part_series({"t2": part}, items, WireLimits(max_voxels=size + size // 2))


def test_assembled_input_carries_the_decision_of_its_image() -> None:
    """The typed input hands the ensemble the image's decision with its evidence (never re-decided)."""
    image = Volume(np.zeros((4, 8, 8), np.int16), modality=Modality.UNKNOWN, meta={})
    spec = SimpleNamespace(name="e", preprocess=PreprocessConfig())
    assembled = assemble([SeriesInput(image, "the raw volume", "file", "CT")], spec)
    assert assembled.decision.modality is Modality.CT
    assert assembled.decision.source == "request"
    assert (assembled.modality, assembled.reason) == (Modality.CT, assembled.decision.reason)
