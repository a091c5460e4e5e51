"""ImageNet weights go through smp's real loader; offline, a missing cache fails fast and clearly.

Each case runs in a fresh interpreter because huggingface_hub reads HF_HOME / HF_HUB_OFFLINE /
HF_ENDPOINT when it is imported. Nothing is mocked: smp, huggingface_hub and safetensors do the work.
The subprocess timeout only turns a hang into a failure; the messages prove which path was taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = """
import json, sys
import torch
from organseg.errors import ModelError
from organseg.models import create_member
results = []
for in_ch in map(int, sys.argv[2:]):
    try:
        model = create_member(sys.argv[1], in_ch, 4, encoder_weights="imagenet")
    except ModelError as exc:
        results.append({"error": "ModelError", "message": str(exc)})
    except Exception as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
    else:
        first = next(p for p in model.encoder.parameters() if p.dim() == 4)
        results.append({"error": None, "first_conv_sum": float(first.double().sum())})
print(json.dumps(results))
"""


def _run(member: str, env: dict[str, str], *in_channels: int) -> list[dict]:
    """``create_member(member, c, 4, encoder_weights="imagenet")`` for each c, in one interpreter."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, member, *map(str, in_channels)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_offline_without_cache_fails_naming_the_cache(tmp_path: Path) -> None:
    (result,) = _run("linknet34", {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, 3)
    assert result["error"] == "ModelError", result
    message = result["message"]
    assert str(tmp_path / "hub") in message
    assert "smp-hub/resnet34.imagenet" in message
    assert "HF_HUB_OFFLINE" in message
    assert "hf download" in message
    assert "--revision" in message


def test_unreachable_hub_fails_at_once_instead_of_retrying(tmp_path: Path) -> None:
    # Port 9 on loopback refuses connections immediately; without the up-front probe, the Hub
    # client would retry with back-off for half a minute before giving up.
    env = {"HF_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}
    (result,) = _run("unet_se_resnet50", env, 1)
    assert result["error"] == "ModelError", result
    assert "http://127.0.0.1:9 is unreachable" in result["message"]
    assert str(tmp_path / "hub") in result["message"]


def test_filled_cache_loads_the_weights_offline(tmp_path: Path) -> None:
    """Filling the cache as the error message says makes the member load those exact weights."""
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["vgg11"]["pretrained_settings"]["imagenet"]
    repo = "models--" + settings["repo_id"].replace("/", "--")
    snapshot = tmp_path / "hub" / repo / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in get_encoder("vgg11", weights=None).state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text("{}")
    first_key = next(k for k, v in state.items() if v.dim() == 4)

    expected = float(state[first_key].double().sum())
    # with one input channel smp folds the RGB kernels into one, which keeps their sum
    rgb, grey = _run("ternausnet", {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}, 3, 1)
    assert rgb["error"] is None, rgb
    assert grey["error"] is None, grey
    assert rgb["first_conv_sum"] == pytest.approx(expected)
    assert grey["first_conv_sum"] == pytest.approx(expected, rel=1e-5)
