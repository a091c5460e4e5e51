"""Reproducibility, output-folder safety, the in-memory phantom API and the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.errors import ConfigError, DataError
from organseg.io.volume import Modality
from organseg.synth import make_phantom, write_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_same_seed_gives_identical_files(
    synth_root: Path, synth_size: int, synth_seed: int, tmp_path: Path
) -> None:
    """Byte-identical, UIDs included; a case does not depend on how many cases are written."""
    again = write_dataset(tmp_path / "again", ct=1, mr=1, size=synth_size, seed=synth_seed)
    ours = _files(again / "Train_Sets")
    reference = _files(synth_root / "Train_Sets")
    assert ours  # CT/1 and MR/1
    for name, content in ours.items():
        assert name.startswith(("CT/1/", "MR/1/"))
        assert reference[name] == content, name


def test_other_seed_gives_other_data(
    synth_root: Path, synth_size: int, synth_seed: int, tmp_path: Path
) -> None:
    other = write_dataset(tmp_path / "other", ct=1, mr=0, size=synth_size, seed=synth_seed + 1)
    name = "Train_Sets/CT/1/DICOM_anon/i0005,0000b.dcm"
    a = pydicom.dcmread(synth_root / name)
    b = pydicom.dcmread(other / name)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.pixel_array.shape == b.pixel_array.shape
    assert not np.array_equal(a.pixel_array, b.pixel_array)


def test_refuses_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="busy"):
        write_dataset(out, ct=1, mr=0, size=32, slices=4)
    assert not (out / "Train_Sets").exists()
    write_dataset(out, ct=1, mr=0, size=32, slices=4, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "Train_Sets").iterdir() if p.name[0] != ".") == ["CT"]


def test_overwrite_replaces_only_its_own_train_sets(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", ct=2, mr=0, size=32, slices=4)
    marker = json.loads((out / "Train_Sets" / ".organseg-synth.json").read_text())
    assert marker["ct"] == 2
    assert marker["mr"] == 0
    write_dataset(out, ct=0, mr=1, size=32, slices=4, overwrite=True)
    train = out / "Train_Sets"
    assert sorted(p.name for p in train.iterdir() if p.name[0] != ".") == ["MR"]  # --ct 0: no CT
    assert not (out / ".Train_Sets.partial").exists()

    foreign = tmp_path / "real"
    (foreign / "Train_Sets" / "CT" / "1").mkdir(parents=True)
    with pytest.raises(DataError, match="Train_Sets"):
        write_dataset(foreign, ct=1, mr=0, size=32, slices=4, overwrite=True)
    assert (foreign / "Train_Sets" / "CT" / "1").is_dir()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size"):
        write_dataset(tmp_path / "a", size=16)
    with pytest.raises(ConfigError, match="slices"):
        write_dataset(tmp_path / "b", slices=2)
    with pytest.raises(ConfigError, match="ct"):
        write_dataset(tmp_path / "c", ct=-1)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="not a folder"):
        write_dataset(tmp_path / "file")
    with pytest.raises(ConfigError, match="no cases asked for"):
        write_dataset(tmp_path / "d", ct=0, mr=0)
    with pytest.raises(ConfigError, match="size must be 32-1024 pixels, got 100000"):
        write_dataset(tmp_path / "e", size=100000)
    with pytest.raises(ConfigError, match=r"1024x1024x256 series is 268 M voxels .* 50 GiB"):
        write_dataset(tmp_path / "f", size=1024)  # CT's default depth scales with the size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the second case's write is interrupted (as Ctrl-C or a full disk would)."""
    import organseg.synth.dataset as dataset

    real_write, written = dataset.write_case, []

    def write_then_fail(root: Path, case) -> None:
        if written:
            raise KeyboardInterrupt
        real_write(root, case)
        written.append(case)

    monkeypatch.setattr(dataset, "write_case", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "new", ct=2, mr=0, size=32, slices=4)
    assert written  # the first case was on disk before the failure
    assert not (tmp_path / "new").exists()  # created by the run, so removed with it
    (tmp_path / "kept").mkdir()
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "kept", ct=2, mr=0, size=32, slices=4)
    assert list((tmp_path / "kept").iterdir()) == []  # no hidden .Train_Sets.partial
    monkeypatch.undo()
    write_dataset(tmp_path / "kept", ct=1, mr=0, size=32, slices=4)  # the rerun just works


def test_cli_bounds_sizes_before_any_work(tmp_path: Path) -> None:
    from organseg.cli import main

    out = tmp_path / "big"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", str(out), "--size", "100000"])
    assert exit_info.value.code == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [("CT", np.int16), ("MR-T1-in", np.uint16), ("t1-out", np.uint16), ("t2spir", np.uint16)],
)
def test_make_phantom(kind: str, dtype: type) -> None:
    image, labels, spacing = make_phantom(kind, size=48, slices=10, seed=3)
    assert image.shape == labels.shape == (10, 48, 48)
    assert image.dtype == dtype
    assert labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}
    assert len(spacing) == 3
    assert spacing[0] == spacing[1]
    assert spacing[2] > 0
    again = make_phantom(kind, size=48, slices=10, seed=3)
    assert np.array_equal(image, again[0])
    assert np.array_equal(labels, again[1])
    other = make_phantom(kind, size=48, slices=10, seed=4)
    assert not np.array_equal(image, other[0])
    if Modality.parse(kind) is Modality.CT:
        liver = labels == 1
        assert 40 < float(np.median(image[liver])) < 90
        assert float(np.median(image[:, :3, :3])) < -900


def test_in_and_out_phase_share_labels_t2_moves_with_breathing() -> None:
    _, in_labels, in_spacing = make_phantom("MR-T1-in", size=48, slices=10, seed=5)
    _, out_labels, out_spacing = make_phantom("MR-T1-out", size=48, slices=10, seed=5)
    _, t2_labels, _ = make_phantom("MR-T2SPIR", size=48, slices=10, seed=5)
    assert np.array_equal(in_labels, out_labels)
    assert in_spacing == out_spacing
    assert not np.array_equal(in_labels, t2_labels)  # a second breath-hold
    dice = (
        2
        * ((in_labels == 1) & (t2_labels == 1)).sum()
        / ((in_labels == 1).sum() + (t2_labels == 1).sum())
    )
    assert dice > 0.7  # but the same patient


def test_make_phantom_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        make_phantom("unknown", size=32, slices=4)
    with pytest.raises(ConfigError):
        make_phantom("PET", size=32, slices=4)


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from organseg.cli import main

    out = tmp_path / "cli"
    args = ["data", "synth", str(out), "--ct", "1", "--mr", "0", "--size", "32", "--slices", "4"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    assert len(list((out / "Train_Sets" / "CT" / "1" / "DICOM_anon").iterdir())) == 4
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(args)  # OUT is no longer empty
    assert refused.value.code != 0
    assert "not empty" in capsys.readouterr().err
