"""Atomic writes: a reader sees the old file or the new one, never half of one, and nothing is left
behind by a write that failed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from organseg.io.atomic import atomic_path, write_text_atomic


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
