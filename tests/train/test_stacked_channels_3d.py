"""3D members on a dataset's stacked channels (nnU-Net's 3d_fullres with several channels per case).

On the two-phase CT dataset of ``test_stacked_channels.py`` (``_0000`` arterial, ``_0001`` venous),
one ensemble of the 2-channel 2D member, a 2-fold ``unet3d_fullres`` and a ``resunet3d_ps``, each
with ``in_channels: 2``, is trained a few real steps through the trainer core (no Ray), exported and
predicted locally from the two channel files of a case. ``volume.intensity: zscore`` normalises each
channel by its own statistics, in the volume cache and in prediction alike. The served form runs in
``tests/serve/test_serve_stacked_channels.py`` (2D member).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from organseg.config import load_config
from organseg.datasets.nnunet import open_nnunet
from organseg.ensemble.inputs import channel_pairs, plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor, prepare_channels_input
from organseg.ensemble.sliding import feet_first
from organseg.ensemble.spec import load_spec
from organseg.errors import ConfigError
from organseg.models import list_members
from organseg.preprocess.volumes import VolumeCache, apply_intensity
from organseg.synth.abdomen import PHASE_CHANNELS, write_abdomen_dataset
from organseg.train.core import MemberTrainer
from organseg.train.data import input_channels, prepare_data
from organseg.train.launcher import member_payload, plan_member
from tests.models.test_members_3d import SMALL
from tests.train.test_stacked_channels import assert_cli_predicts, train_stacked, write_config

#: Patches of the whole 32² prepared grid; 3 mm slices kept (6 slices: z padded to the patch).
VOLUME = {"spacing": [12.0, 12.0, 3.0], "patch": [8, 32, 32], "patches_per_volume": 2}
UNET3D = {
    "name": "u3d",
    "arch": "unet3d_fullres",
    "kwargs": SMALL["unet3d_fullres"],
    "in_channels": 2,
    "folds": 2,
    "epochs": 1,
    "batch_size": 2,
    "volume": VOLUME | {"intensity": "zscore"},
}
RESUNET3D = {
    "name": "res3d",
    "arch": "resunet3d_ps",
    "kwargs": SMALL["resunet3d_ps"],
    "in_channels": 2,
    "epochs": 1,
    "batch_size": 2,
    "volume": VOLUME,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_stacked(tmp_path_factory.mktemp("phases3d"), UNET3D, RESUNET3D)


def test_3d_members_predict_from_both_channel_files(
    trained: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    model_dir, dataset_root = trained
    spec = load_spec(model_dir)
    kinds = {m.name: (m.kind, m.in_channels, len(m.fold_weights)) for m in spec.members}
    assert kinds == {"attn2": ("2d", 2, 0), "u3d": ("3d", 2, 2), "res3d": ("3d", 2, 0)}
    predictor = EnsemblePredictor(model_dir, device="cpu")
    first = dataset_root / "imagesTr" / "synth_001_0000.nii.gz"
    (plan,) = plan_inputs(first, channels=channel_pairs(spec.preprocess))
    item = plan.load()
    prediction = predictor.predict(item.image, channels=item.channels)
    assert sorted(prediction.members) == ["attn2", "res3d", "u3d"]
    assert prediction.labels.shape == item.image.shape
    values = set(np.unique(prediction.labels.array).tolist())
    assert values <= {0, *spec.label_set().values}

    # each 3D member reads both channels of the prepared volume, on its grid
    _, prepared = prepare_channels_input(spec, item.channels)
    assert prepared.array.shape[1] == 2
    spacing, flip = prepared.prepared_geometry.spacing, feet_first(prepared.geometry)
    for name in ("u3d", "res3d"):
        runner = predictor.runner(name)
        assert runner.is_3d
        assert runner.per_channel
        probs = runner.run(prepared.array, spacing, flip)
        assert probs.shape == (prepared.array.shape[0], len(spec.organs), 32, 32)
        swapped = runner.run(np.ascontiguousarray(prepared.array[:, ::-1]), spacing, flip)
        assert not np.array_equal(probs, swapped)  # the channels are not read as one

    assert_cli_predicts(capsys, first, model_dir, tmp_path, prediction.labels.array)


def test_zscore_prediction_normalises_each_channel_on_its_own(
    trained: tuple[Path, Path],
) -> None:
    """A channel scaled ×100 and shifted gives the z-scored member the same probabilities."""
    model_dir, dataset_root = trained
    predictor = EnsemblePredictor(model_dir, device="cpu")
    spec = predictor.spec
    (plan,) = plan_inputs(
        dataset_root / "imagesTr" / "synth_002_0000.nii.gz", channels=channel_pairs(spec.preprocess)
    )
    _, prepared = prepare_channels_input(spec, plan.load().channels)
    spacing, flip = prepared.prepared_geometry.spacing, feet_first(prepared.geometry)
    scaled = np.array(prepared.array, dtype=np.float32)
    scaled[:, 1] = scaled[:, 1] * 100.0 + 7.0
    runner = predictor.runner("u3d")
    assert runner.entry.volume.intensity == "zscore"
    same = runner.run(scaled, spacing, flip).astype(int)
    assert np.abs(same - runner.run(prepared.array, spacing, flip).astype(int)).max() <= 1


def test_zscore_is_per_channel_when_dataset_channels_are_stacked() -> None:
    x = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    scaled = x.clone()
    scaled[1] = scaled[1] * 100.0 + 7.0
    a = apply_intensity(x, "zscore", per_channel=True)
    b = apply_intensity(scaled, "zscore", per_channel=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    means = scaled.mean(dim=(1, 2, 3)).tolist(), scaled.std(dim=(1, 2, 3)).tolist()
    torch.testing.assert_close(apply_intensity(scaled, "zscore", means, per_channel=True), b)
    # pooled (the T1 in/out stack, single-channel volumes): one scale for both channels
    pooled = apply_intensity(scaled, "zscore")
    assert not torch.allclose(pooled, b, atol=1e-2)
    torch.testing.assert_close(pooled[0], (scaled[0] - scaled.mean()) / scaled.std())


def test_the_volume_cache_keeps_statistics_per_channel(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The stacked cache's index holds each channel's mean and std; a training patch of a volume is
    z-scored with them (every channel of the whole volume at mean 0, std 1)."""
    _, dataset_root = trained
    config = load_config(write_config(tmp_path, dataset_root, UNET3D))
    data = prepare_data(config)
    ids = [s.id for s in data.cache.samples]
    volumes = VolumeCache.build(data.cache, ids, VOLUME["spacing"])
    assert volumes.per_channel
    for sample_id in ids:
        entry = volumes.index["samples"][sample_id]
        assert len(entry["channel_mean"]) == len(entry["channel_std"]) == 2
        image = torch.from_numpy(np.asarray(volumes.volume(sample_id)[0], dtype=np.float32))
        normalised = volumes.normalise(sample_id, image, "zscore")
        torch.testing.assert_close(
            normalised.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-2, rtol=0
        )
        torch.testing.assert_close(normalised.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-2, rtol=0)


@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phases3d-archs")
    return write_abdomen_dataset(root / "ds", cases=2, size=32, slices=6, seed=3, venous=True)


@pytest.mark.parametrize("arch", [s.name for s in list_members("segmenter") if s.dims == 3])
def test_every_3d_member_trains_on_the_stacked_channels(
    arch: str, phases: Path, tmp_path: Path
) -> None:
    """No 3D member is refused stacked channels: each takes a real training step on 2-channel
    patches; ``in_channels`` is still checked, naming the member."""
    member = {
        "name": "m3d",
        "arch": arch,
        "kwargs": SMALL[arch],
        "in_channels": 2,
        "epochs": 1,
        "steps_per_epoch": 1,
        "batch_size": 2,
        "volume": VOLUME | {"intensity": "zscore"},
    }
    config = load_config(write_config(tmp_path, phases, member))
    assert [c.name for c in input_channels(config, open_nnunet(phases))] == PHASE_CHANNELS
    data = prepare_data(config)
    unit = config.member("m3d")
    trainer = MemberTrainer(member_payload(config, plan_member(config, unit, data), data))
    x, _ = next(iter(trainer.loader))
    assert x.shape == (2, 2, 8, 32, 32)
    result = trainer.run_epoch(0)
    assert np.isfinite(result.metrics["train_loss"])
    assert 0.0 <= result.metrics["val_dice"] <= 1.0

    wrong = load_config(write_config(tmp_path, phases, member | {"in_channels": 1}))
    with pytest.raises(ConfigError, match=r"members\.1\.in_channels: member 'm3d' takes 1"):
        input_channels(wrong, open_nnunet(phases))
