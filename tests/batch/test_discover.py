"""Discovery, headers only: every input kind, refusals found before reading, stable keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.batch.discover import discover, series_key
from organseg.batch.pipeline import parse_workers
from organseg.errors import DataError, OrgansegError
from organseg.io.files import write_volume_file
from organseg.io.volume import Geometry, Modality, Volume
from tests.batch.conftest import Archive


def _volume(path: Path) -> Path:
    volume = Volume(np.zeros((3, 8, 8), np.int16), Geometry(spacing=(1.0, 1.0, 2.0)), Modality.CT)
    return write_volume_file(volume, path)


def test_a_pacs_tree_groups_by_series_uid(archive: Archive) -> None:
    items = discover(archive.root)
    assert len(items) == archive.series_count
    dicom = [i for i in items if i.kind == "dicom"]
    # the duplicate export of CT 1 joins its series: 24 files, 2 folders, one item
    (dup,) = [i for i in dicom if len(i.files) == 24]
    assert len(dup.source.split(";")) == 2
    # T1 in- and out-phase, and T2, in one folder: three items
    assert sum(i.modality == "MR" for i in dicom) == len(archive.mr)
    assert [i.key for i in discover(archive.root)] == [i.key for i in items], (
        "stable order and keys"
    )
    assert all("SYNTH" not in i.source + i.label for i in items)


def test_nnunet_multichannel_cases_are_refused(tmp_path: Path) -> None:
    images = tmp_path / "Dataset001" / "imagesTs"
    images.mkdir(parents=True)
    _volume(images / "case_001_0000.nii.gz")
    _volume(images / "case_002_0000.nii.gz")
    _volume(images / "case_002_0001.nii.gz")
    items = discover(tmp_path / "Dataset001")
    assert len(items) == 2
    by_case = {Path(i.path).name: i for i in items}
    assert by_case["case_001_0000.nii.gz"].refused == ""
    assert "2 channels" in by_case["case_002_0000.nii.gz"].refused


def test_a_manifest_of_paths_and_uris(tmp_path: Path, archive: Archive) -> None:
    _volume(tmp_path / "a.nii.gz")
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        f"path\na.nii.gz\na.nii.gz\nmissing.nii.gz\ns3://bucket/b.nrrd\ns3://bucket/dicom/\n"
        f"{archive.sources['ct1']}\n"
    )
    items = discover(manifest)
    kinds = [(i.kind, bool(i.refused)) for i in items]
    assert kinds.count(("file", False)) == 1, "a path listed twice is segmented once"
    assert ("none", True) in kinds  # missing
    assert ("uri", False) in kinds
    assert ("uri", True) in kinds  # a URI that is no volume file
    assert ("dicom", False) in kinds


def test_a_chaos_dataset_is_planned_as_predict_plans_it(synth_root: Path) -> None:
    items = discover(synth_root)
    assert {i.kind for i in items} == {"chaos"}
    assert {i.case_id for i in items} >= {"CT/1", "CT/2", "MR/1/T2SPIR"}
    assert series_key("chaos", str(synth_root.resolve()), "CT/1") in {i.key for i in items}


def test_nothing_to_segment_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no series found"):
        discover(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        discover(tmp_path / "absent")


@pytest.mark.parametrize(("text", "pair"), [(None, (1, 3)), ("2", (2, 2)), ("1-8", (1, 8))])
def test_workers_option(text: str | None, pair: tuple[int, int]) -> None:
    assert parse_workers(text, 3) == pair


@pytest.mark.parametrize("text", ["0", "3-1", "x", "1-y"])
def test_bad_workers_option(text: str) -> None:
    with pytest.raises(OrgansegError, match="--workers"):
        parse_workers(text, 3)
