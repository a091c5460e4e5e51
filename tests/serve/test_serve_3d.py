"""A mixed 2D + 3D ensemble (with a k-fold 3D member) trains in parallel and serves over HTTP and gRPC.

One module-scoped deployment: the synthetic CT ensemble of a 2D U-Net, a 2-fold nnU-Net-style 3D U-Net
and the pixel-shuffle residual 3D U-Net. Served masks equal local prediction; the real CT case comes back
on its own grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.config import parse_config
from organseg.ensemble.inputs import PredictInput
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.ensemble.spec import load_spec
from organseg.io import discover_cases, load_case, read_dicom_series
from organseg.io.volume import Modality
from organseg.serve.client import GrpcClient, HttpBackend, HttpClient
from tests.conftest import loopback_serve_config, serving

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP_PORT, GRPC_PORT = 18346, 19346
VOLUME = {
    "spacing": [4.0, 4.0, 4.0],
    "patch": [8, 32, 32],
    "patches_per_volume": 2,
    "augment": ["flip"],
}


def mixed_experiment(root: Path):
    common = {"epochs": 2, "cpus_per_worker": 0.5, "optimizer": {"lr": 0.003}}
    return parse_config(
        {
            "name": "mixed-3d",
            "task": 2,
            "storage_path": str(root / "runs"),
            "dataset": {
                "synthetic": {"ct": 3, "mr": 0, "size": 64, "slices": 12, "seed": 3},
                "val_fraction": 0.34,
                "cache_dir": str(root / "cache"),
            },
            "preprocess": {"size": 64},
            "augment": {"enabled": False},
            "members": [
                {"name": "attn", "arch": "attention_unet", "batch_size": 8,
                 "kwargs": {"base_channels": 8, "depth": 4}, **common},
                {"name": "u3d", "arch": "unet3d_fullres", "folds": 2, "batch_size": 2,
                 "kwargs": {"base_channels": 4, "depth": 3}, "volume": VOLUME, **common},
                {"name": "ps3d", "arch": "resunet3d_ps", "batch_size": 2,
                 "kwargs": {"base_channels": 4, "blocks": [1, 1, 1]},
                 "volume": {**VOLUME, "intensity": "zscore"}, **common},
            ],
        },
        source="mixed-3d (test config)",
    )  # fmt: skip


@pytest.fixture(scope="module")
def served_mixed(ray_cluster, tmp_path_factory: pytest.TempPathFactory):
    from organseg.train.launcher import train_experiment

    config = mixed_experiment(tmp_path_factory.mktemp("mixed3d"))
    report = train_experiment(config)
    assert report.ok, [o.error for o in report.outcomes]
    windows = {
        "member-u3d": {"user_config": {"window_batch_size": 3}},
        "member-ps3d": {"user_config": {"window_batch_size": 1}},
    }
    schema = loopback_serve_config(
        report.model_dir, HTTP_PORT, GRPC_PORT, windows, max_voxels=30_000_000
    )
    with serving(schema):
        yield config, report


def test_mixed_ensemble_trains_in_parallel_and_serves_like_local(
    served_mixed, chaos_sample
) -> None:
    from organseg.train.data import dataset_root

    config, report = served_mixed
    # five Ray Train runs (the 2D member, two folds, the residual 3D U-Net) overlapped in time
    runs = {o.name: o.history[-1] for o in report.outcomes if o.history}
    assert set(runs) == {"attn", "u3d-fold0", "u3d-fold1", "ps3d"}
    assert max(h["worker_started_at"] for h in runs.values()) < min(
        h["finished_at"] for h in runs.values()
    )
    spec = load_spec(report.model_dir)
    kinds = {m.name: (m.kind, len(m.fold_weights)) for m in spec.members}
    assert kinds == {"attn": ("2d", 0), "u3d": ("3d", 2), "ps3d": ("3d", 0)}
    assert spec.members[1].volume.patch == (8, 32, 32)

    ref = next(r for r in discover_cases(dataset_root(config)) if r.modality is Modality.CT)
    image = load_case(ref, with_label=False).image
    local = EnsemblePredictor(report.model_dir).predict(image)
    assert local.members == ["attn", "ps3d", "u3d"]
    # raw voxels, so the server sees exactly the array local prediction saw (a 3D member is not
    # invariant to the slice order; DICOM sent over the wire is stacked by slice position instead)
    for client in (
        HttpClient(f"http://127.0.0.1:{HTTP_PORT}", timeout=300),
        GrpcClient(f"127.0.0.1:{GRPC_PORT}", timeout=300),
    ):
        served = client.segment(image)
        assert served.labels.shape == image.shape
        np.testing.assert_array_equal(served.labels.array, local.labels.array)
        assert served.members == local.members

    # the DICOM series itself: the server stacks it by slice position, here it was read in file order;
    # 3D members see both head-first, so the masks still agree
    dicom = HttpBackend(f"http://127.0.0.1:{HTTP_PORT}", 300).predict(
        PredictInput(ref.case_id, image), None
    )
    np.testing.assert_array_equal(dicom.labels.array, local.labels.array)

    # the real CT case: whole-volume 3D prediction comes back on the case's own grid
    real = read_dicom_series(chaos_sample / "Train_Sets" / "CT" / "1" / "DICOM_anon")
    prediction = HttpBackend(f"http://127.0.0.1:{HTTP_PORT}", 600).predict(
        PredictInput("real", real), None
    )
    assert prediction.labels.shape == real.shape
    assert prediction.labels.geometry.isclose(real.geometry)
