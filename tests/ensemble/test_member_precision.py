"""Member precision: fp32 on CPU by default (in-process = served there), explicit choices checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from organseg.config import parse_config
from organseg.ensemble.members import MemberRunner, inference_precision
from organseg.ensemble.spec import load_spec, write_untrained_model_dir
from organseg.errors import ModelError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = parse_config(
        {
            "name": "precision",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 32},
            "members": [{"name": "attn", "arch": "attention_unet",
                         "kwargs": {"base_channels": 8, "depth": 3}}],
        }
    )  # fmt: skip
    return write_untrained_model_dir(config, tmp_path_factory.mktemp("m") / "model")


def test_defaults_and_bad_choices() -> None:
    assert inference_precision(None, torch.device("cpu")) == "fp32"
    assert inference_precision(None, torch.device("cuda")) == "fp16"
    assert inference_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ModelError, match="needs a GPU"):
        inference_precision("fp16", torch.device("cpu"))
    with pytest.raises(ModelError, match="precision must be one of"):
        inference_precision("int8", torch.device("cpu"))


def test_cpu_runs_fp32_and_bf16_stays_close(model_dir: Path) -> None:
    entry = load_spec(model_dir).members[0]
    slices = np.random.default_rng(0).random((5, 1, 32, 32)).astype(np.float16)
    fp32 = MemberRunner(model_dir, entry, device="cpu", batch_size=2)
    assert fp32.precision == "fp32"
    assert next(fp32.model.parameters()).dtype == torch.float32
    expected = fp32.predict(slices)
    assert expected.shape == (5, 1, 32, 32)
    assert expected.dtype == np.uint8
    np.testing.assert_array_equal(
        MemberRunner(model_dir, entry, device="cpu").predict(slices), expected
    )
    bf16 = MemberRunner(model_dir, entry, device="cpu", batch_size=2, precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert bf16.warm_up(32) >= 0.0
    assert bf16.warm_up(32) == 0.0  # once per pass size
    got = bf16.predict(slices)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 16  # bf16 keeps ~3 digits
