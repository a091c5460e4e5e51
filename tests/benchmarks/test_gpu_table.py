"""The GPU suite's table reads the sections' JSON lines and says what was not measured."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(*figures: dict) -> str:
    return "".join(json.dumps(f) + "\n" for f in figures)


def test_table_rows_from_section_lines(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "serve.jsonl").write_text(
        _lines(
            {"bench": "serve", "phase": "in_process", "seconds": 0.4, "throughput_1_clients": 240.0,
             "throughput_16_clients": 300.0, "postprocess_share": 0.25},
            {"bench": "serve", "phase": "separate, max_batch_size 4", "grpc_latency_s": 0.45,
             "throughput_1_clients": 210.0, "throughput_16_clients": 650.0, "voxel_agreement": 1.0},
        )
        + '{"bench": "serve", "phase": "cut by the time li'  # a line a time limit cut short
    )  # fmt: skip
    (tmp_path / "serve-eager.jsonl").write_text(
        _lines({"bench": "serve", "phase": "in_process", "seconds": 0.8})
    )
    (tmp_path / "train.jsonl").write_text(
        _lines(
            {"bench": "train", "phase": "member", "member": "linknet34", "bf16_over_fp32_x": 3.0,
             "bf16": {"train_slices_per_s": 900.0, "loader_slices_per_s": 2000.0,
                      "data_wait_fraction": 0.01, "steps": 10},
             "fp32": {"train_slices_per_s": 300.0, "loader_slices_per_s": 2000.0,
                      "data_wait_fraction": 0.0, "steps": 10}},
        )
    )  # fmt: skip
    table = _module()
    rows = {name: value for name, value, _ in table.rows(table.load(tmp_path))}
    assert rows["Serve gRPC (compiled), 16 clients"] == "650 slices/s"
    assert rows["in-process (compiled): share in post-processing"] == "25.0 %"
    assert rows["training linknet34 bf16 / fp32"] == "3.00x"
    assert rows["torch.compile: in-process volume, eager / compiled"] == "2.00x"
    # what a section did not write is said, not invented
    assert rows["Serve gRPC (eager), 16 clients"] == "not measured"
    assert rows["training two members side by side vs one after another"] == "not measured"
    (tmp_path / "notes.txt").write_text("train: stopped at its 100 s limit\n")
    monkeypatch.setattr(
        sys, "argv", ["gpu_table", str(tmp_path), "--notes", str(tmp_path / "notes.txt")]
    )
    assert table.main() == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "| Serve gRPC (compiled), 16 clients | 650 slices/s | ≥ 600 slices/s |" in out
    summary = json.loads(out[-1])
    assert summary["goal_600_slices_per_s_met"] is True
    assert summary["goal_volume_0_5_s_met"] is True
    assert "stopped at its 100 s limit" in summary["notes"]


def test_empty_folder_is_all_not_measured(tmp_path: Path) -> None:
    table = _module()
    values = {value for _, value, _ in table.rows(table.load(tmp_path))}
    assert values == {"not measured"}
