"""The GPU suite's table reads the benchmarks' JSON lines and says what was not measured."""

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


def test_table_rows_from_benchmark_lines(tmp_path: Path, capsys, monkeypatch) -> None:
    serve = {
        "in_process": {"seconds": 0.4, "throughput_1_clients": 240.0, "throughput_16_clients": 300.0},
        "separate, max_batch_size 4": {"grpc_latency_s": 0.45, "throughput_1_clients": 210.0,
                                       "throughput_16_clients": 650.0, "voxel_agreement": 1.0},
    }  # fmt: skip
    train = {
        "members": {"linknet34": {
            "bf16": {"train_slices_per_s": 900.0, "loader_slices_per_s": 2000.0, "data_wait_fraction": 0.01},
            "fp32": {"train_slices_per_s": 300.0, "loader_slices_per_s": 2000.0, "data_wait_fraction": 0.0},
        }},
        "pair": ["a", "b"], "parallel_over_sequential_x": 1.4, "parallel_slices_per_s": {"a": 1.0},
    }  # fmt: skip
    (tmp_path / "serve.json").write_text("noise\n" + json.dumps(serve))
    (tmp_path / "train.json").write_text("")  # a failed part
    table = _module()
    rows = dict((name, value) for name, value, _ in table.rows(serve, train))
    assert rows["Serve gRPC, 16 clients"] == "650 slices/s"
    assert rows["training linknet34 bf16 / fp32"] == "3.00x"
    monkeypatch.setattr(
        sys, "argv", ["gpu_table", str(tmp_path / "serve.json"), str(tmp_path / "train.json")]
    )
    assert table.main() == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["goal_600_slices_per_s_met"] is True
    assert summary["goal_volume_0_5_s_met"] is True
    assert summary["train"] == {}
