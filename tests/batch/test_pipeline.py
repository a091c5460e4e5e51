"""`organseg batch` on a real local Ray cluster: the archive end to end, a re-run, a killed actor."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import SimpleITK as sitk

from organseg.batch.pipeline import PoolSize
from organseg.batch.run import execute, plan_run
from organseg.cli import main
from tests.batch.conftest import Archive
from tests.batch.test_work import predict_local, run_sequentially
from tests.conftest import run_cli as run_folded

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def run_cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", *argv])
    return int(exit_info.value.code or 0)


def table(out: Path) -> list[dict]:
    return pq.read_table(out / "results.parquet").to_pylist()


def labels(path: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


@pytest.fixture(scope="module")
def reference(archive: Archive, batch_model: Path, tmp_path_factory) -> dict[str, dict]:
    """The series' rows from the Ray-free core (whose outputs equal `predict --local`), by key."""
    out = tmp_path_factory.mktemp("reference") / "out"
    return {r["key"]: r for r in run_sequentially(archive, batch_model, out)}


@pytest.fixture(scope="module")
def first_run(ray_cluster: str, archive: Archive, batch_model: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "out"
    code = run_cli(str(archive.root), "-o", str(out), "--model", str(batch_model))
    return out, code


def test_archive_rows_reasons_and_exit_code(archive: Archive, first_run, reference) -> None:
    out, code = first_run
    assert code == 1, "some series were refused"
    rows = table(out)
    assert len(rows) == archive.series_count == len({r["key"] for r in rows})
    assert {r["key"]: r["status"] for r in rows} == {k: r["status"] for k, r in reference.items()}
    for row in rows:
        assert row["reason"] == reference[row["key"]]["reason"]
        assert row["model_version"]
        if row["status"] == "done":
            assert row["node_id"]
            assert row["read_s"] is not None
            assert row["predict_s"] is not None
            assert row["write_s"] is not None
            assert row["volume_ml.liver"] == reference[row["key"]]["volume_ml.liver"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (len(archive.good_ct) + 1, 0)
    assert summary["refused"] == len(archive.mr) + len(archive.refused_dicom)
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == archive.series_count + 1


def test_outputs_equal_predict_local(
    archive: Archive, batch_model: Path, first_run, reference, tmp_path: Path
) -> None:
    out, _ = first_run
    rows = {r["key"]: r for r in table(out)}
    done = [r for r in rows.values() if r["status"] == "done"]
    for row in done:
        assert np.array_equal(labels(row["output"]), labels(reference[row["key"]]["output"]))
    # and directly against `predict --local` for one series read from its own folder
    import pydicom

    source = archive.sources["ct2"]
    uid = str(pydicom.dcmread(next(source.glob("*.dcm"))).SeriesInstanceUID)
    (row,) = [r for r in done if r["series_uid"] == uid]
    theirs = predict_local(batch_model, source, tmp_path / "ct2.nii.gz")
    assert np.array_equal(labels(row["output"]), labels(str(theirs)))
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(
        Path(r["output"]).name for r in done
    )


def test_rerun_does_nothing(archive: Archive, batch_model: Path, first_run) -> None:
    out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()}
    records = {p: p.read_text() for p in (out / ".organseg-batch" / "done").iterdir()}
    plan = plan_run(archive.root, out, batch_model)
    assert plan.todo == []
    code = run_cli(str(archive.root), "-o", str(out), "--model", str(batch_model))
    assert code == 1
    assert {p: p.stat().st_mtime_ns for p in (out / "labels").iterdir()} == before
    assert {p: p.read_text() for p in (out / ".organseg-batch" / "done").iterdir()} == records
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == archive.series_count
    assert sum(r["resumed"] for r in table(out)) == summary["resumed"]


def _predicting_actor_pids(address: str) -> list[int]:
    from ray.util.state import list_actors

    alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return [a.pid for a in alive if "SeriesPredictor" in a.class_name and a.pid]


def test_a_killed_actor_loses_and_duplicates_nothing(
    ray_cluster: str, archive: Archive, batch_model: Path, reference, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    plan = plan_run(archive.root, out, batch_model)
    killed: list[int] = []
    seen: list[str] = []

    def kill_once(row: dict) -> None:
        seen.append(row["key"])
        if not killed:
            pids = _predicting_actor_pids(ray_cluster)
            assert pids, "no predicting actor alive"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    outcome = execute(plan, PoolSize(1, 1), kill_once)
    assert killed
    assert len(seen) > 1, "rows kept coming after the kill"
    rows = outcome.rows
    assert len(rows) == archive.series_count == len({r["key"] for r in rows})
    assert {r["key"]: r["status"] for r in rows} == {k: r["status"] for k, r in reference.items()}
    done = [r for r in rows if r["status"] == "done"]
    for row in done:
        assert np.array_equal(labels(row["output"]), labels(reference[row["key"]]["output"]))
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(
        Path(r["output"]).name for r in done
    )
    partial = out / ".organseg-batch" / "partial"
    assert not partial.exists() or not any(partial.iterdir())


def test_an_actor_no_node_can_host_is_refused_before_anything_runs(
    ray_cluster: str, archive: Archive, batch_model: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code, _, err = run_folded(capsys, "batch", archive.root, "-o", out, "--model", batch_model,
                              "--cpus-per-worker", "64")  # fmt: skip
    assert code == 2, err
    assert "--cpus-per-worker 64: no node of the Ray cluster has that many CPUs" in err
    assert not (out / "results.parquet").exists()
