"""A model that stacks a dataset's channels (CT arterial + venous phase), served: every channel of a
case travels in one request, as HTTP ``channels`` file parts or gRPC ``channels`` entries named by
channel name,
and the masks equal ``predict --local``'s. A missing channel or one on another grid is a 422 naming
the channel, and the next good request is answered."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from organseg.ensemble.inputs import channel_pairs, plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor
from organseg.ensemble.spec import load_spec
from organseg.errors import OrgansegError
from organseg.serve.client import GrpcBackend, HttpBackend, volume_file_bytes
from tests.conftest import loopback_serve_config, serving
from tests.train.test_stacked_channels import train_stacked
from tests.train.test_stacked_channels_3d import RESUNET3D, VOLUME

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HTTP_PORT, GRPC_PORT = 18361, 19361


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory: pytest.TempPathFactory):
    """The two-channel 2D member and a two-channel 3D member (each channel z-scored on its own)
    trained a few steps and served on loopback: ``(http url, grpc target, model dir, dataset root)``."""
    res3d = RESUNET3D | {"volume": VOLUME | {"intensity": "zscore"}}
    model_dir, dataset = train_stacked(tmp_path_factory.mktemp("served-phases"), res3d)
    with serving(loopback_serve_config(model_dir, HTTP_PORT, GRPC_PORT)):
        yield f"http://127.0.0.1:{HTTP_PORT}", f"127.0.0.1:{GRPC_PORT}", model_dir, dataset


def test_http_and_grpc_masks_equal_local(served) -> None:
    url, target, model_dir, dataset = served
    first = dataset / "imagesTr" / "synth_002_0000.nii.gz"
    local = EnsemblePredictor(model_dir, device="cpu")
    (plan,) = plan_inputs(first, channels=channel_pairs(local.spec.preprocess))
    item = plan.load()
    expected = local.predict(item.image, channels=item.channels).labels.array
    for backend in (HttpBackend(url, 120), GrpcBackend(target, 120)):
        listing = backend.models()
        assert [c["name"] for c in listing["channels"]] == ["arterial", "venous"]
        assert {m["name"] for m in listing["members"]} == {"attn2", "res3d"}
        (remote_plan,) = backend.plan(first, None)
        prediction = backend.predict(remote_plan.load(), None)
        assert np.array_equal(prediction.labels.array, expected), backend.describe()


def test_a_missing_channel_or_another_grid_is_a_422_naming_it(served) -> None:
    url, target, model_dir, dataset = served
    (plan,) = plan_inputs(
        dataset / "imagesTr" / "synth_001_0000.nii.gz",
        channels=channel_pairs(load_spec(model_dir).preprocess),
    )
    item = plan.load()
    arterial = volume_file_bytes(item.channels["arterial"])
    answer = httpx.post(
        f"{url}/v1/segment", files=[("channels", ("arterial", arterial))], timeout=60
    )
    assert answer.status_code == 422, answer.text
    assert "missing channel(s) venous" in answer.text
    venous = item.channels["venous"]
    cropped = type(venous)(venous.array[1:], venous.geometry, venous.modality, venous.meta)
    answer = httpx.post(
        f"{url}/v1/segment",
        files=[
            ("channels", ("arterial", arterial)),
            ("channels", ("venous", volume_file_bytes(cropped))),
        ],
        timeout=60,
    )
    assert answer.status_code == 422, answer.text
    assert "channel 'venous'" in answer.text
    assert "not on the grid of channel 'arterial'" in answer.text
    with pytest.raises(OrgansegError, match=r"missing channel\(s\) venous"):
        GrpcBackend(target, 60).client.segment_channels({"arterial": item.channels["arterial"]})
    good = HttpBackend(url, 120).predict(item, None)  # the next good request is answered
    assert good.labels.shape == item.image.shape
