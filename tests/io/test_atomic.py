"""Atomic writes: a reader sees the old file or the new one, never half of one, and nothing is left
behind by a write that failed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from organseg.io.atomic import atomic_dir, atomic_path, write_bytes_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "index.json", "old")

    def fail() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fail()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


def test_private_files_are_the_owners_only(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "seg.nii.gz", suffix=".nii.gz", private=True) as tmp:
        assert tmp.name.startswith(".seg.nii.gz.")
        assert tmp.name.endswith(".nii.gz")  # writers that choose the format by extension
        tmp.write_bytes(b"voxels")
    assert stat.S_IMODE((tmp_path / "seg.nii.gz").stat().st_mode) == 0o600


def test_a_temporary_in_its_own_folder_never_shows_beside_the_target(tmp_path: Path) -> None:
    """The spool's way: written in a swept folder, fsynced, renamed; a failed write leaves nothing."""
    folder, scratch = tmp_path / "incoming", tmp_path / "tmp"
    folder.mkdir()
    scratch.mkdir()
    target = folder / "instance.dcm"
    with atomic_path(target, tmp_dir=scratch, durable=True) as tmp:
        assert tmp.parent == scratch
        tmp.write_bytes(b"half")
        assert list(folder.iterdir()) == []  # a reader of the folder sees nothing yet
    assert target.read_bytes() == b"half"

    def fail() -> None:
        with atomic_path(target, tmp_dir=scratch) as tmp:
            tmp.write_bytes(b"other")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fail()
    assert (target.read_bytes(), list(scratch.iterdir())) == (b"half", [])
    assert write_bytes_atomic(target, b"whole", tmp_dir=scratch).read_bytes() == b"whole"


@pytest.mark.parametrize("own_tmp", [False, True], ids=["beside", "tmp-dir"])
def test_a_folder_of_results_appears_whole_or_not_at_all(tmp_path: Path, own_tmp: bool) -> None:
    """A folder is filled in private staging and replaces the old one whole; a failure keeps the old
    one and leaves no staging behind."""
    parent, scratch = tmp_path / "out", tmp_path / "tmp"
    parent.mkdir()
    scratch.mkdir()
    target = parent / "series-1"
    with atomic_dir(target, tmp_dir=scratch if own_tmp else None) as staging:
        assert staging.parent == (scratch if own_tmp else parent)
        assert stat.S_IMODE(staging.stat().st_mode) == 0o700
        (staging / "a.png").write_bytes(b"old")
        assert not target.exists()  # a reader sees nothing yet
    assert [p.name for p in target.iterdir()] == ["a.png"]

    def fail() -> None:
        with atomic_dir(target, tmp_dir=scratch if own_tmp else None) as staging:
            (staging / "b.png").write_bytes(b"half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fail()
    assert [p.name for p in target.iterdir()] == ["a.png"]
    assert [p.name for p in parent.iterdir()] == ["series-1"]
    assert list(scratch.iterdir()) == []
    with atomic_dir(target, tmp_dir=scratch if own_tmp else None) as staging:
        (staging / "b.png").write_bytes(b"new")
    assert [p.name for p in target.iterdir()] == ["b.png"]  # replaced whole, not merged
