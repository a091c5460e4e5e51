"""A multi-channel nnU-Net dataset (two CT phases per case, ``_0000`` arterial + ``_0001`` venous)
read as nnU-Net reads it: one sample per case whose input channels are the case's channels.

A two-channel member is trained a few real steps through the trainer core (no Ray), exported, and
predicted locally from the two channel files of a case; the model directory records its channels.
A case missing a channel, a channel on another grid and a member of the wrong ``in_channels`` each
end in one error naming the channel, case or key. The served form is tested in
``tests/serve/test_serve_stacked_channels.py`` with the model trained here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from organseg.config import load_config
from organseg.datasets.nnunet import open_nnunet
from organseg.datasets.refs import dataset_refs, stacks_channels
from organseg.ensemble.describe import describe_model_dir
from organseg.ensemble.inputs import channel_pairs, plan_inputs
from organseg.ensemble.predictor import EnsemblePredictor, prepare_channels_input
from organseg.ensemble.routing import ModalityError
from organseg.ensemble.spec import load_spec
from organseg.errors import ConfigError, DataError
from organseg.io.volume import Modality
from organseg.synth.abdomen import PHASE_CHANNELS, write_abdomen_dataset
from organseg.train.core import MemberTrainer
from organseg.train.data import prepare_data
from organseg.train.export import export_model_dir
from organseg.train.launcher import member_payload, plan_member
from tests.conftest import run_cli
from tests.train.test_dataset_training import assert_same_preparation

MEMBER = {
    "name": "attn2",
    "arch": "attention_unet",
    "kwargs": {"base_channels": 4, "depth": 3},
    "in_channels": 2,
    "epochs": 1,
    "batch_size": 8,
    "optimizer": {"lr": 0.002},
}


def write_config(root: Path, dataset: Path, *others: dict[str, object], **member: object) -> Path:
    """The two-phase experiment: :data:`MEMBER` (updated by ``member``), then ``others``."""
    data = {
        "name": "phases",
        "storage_path": str(root / "runs"),
        "dataset": {"path": str(dataset), "val_fraction": 0.5, "cache_dir": str(root / "cache")},
        "preprocess": {"size": 32},
        "augment": {"enabled": False},
        "members": [MEMBER | member, *others],
    }
    path = root / "phases.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def train_stacked(root: Path, *others: dict[str, object]) -> tuple[Path, Path]:
    """Write the two-phase dataset, train the 2-channel member (and ``others``: more member configs,
    each fold of a k-fold one) one epoch through the trainer core and export them: ``(model
    directory, dataset root)``."""
    dataset = write_abdomen_dataset(root / "ds", cases=2, size=32, slices=6, seed=3, venous=True)
    config = load_config(write_config(root, dataset, *others))
    data = prepare_data(config)
    assert [c.name for c in config.preprocess.channels] == PHASE_CHANNELS
    checkpoints: dict[str, str] = {}
    for member in [unit for m in config.members for unit in data.assign_folds(m)]:
        assert member.modalities == [Modality.CT]
        payload = member_payload(config, plan_member(config, member, data), data)
        trainer = MemberTrainer(payload)
        x, _ = next(iter(trainer.loader))
        window = (32, 32) if member.dims == 2 else member.volume.patch
        assert x.shape[1:] == (2, *window)  # arterial, venous
        for epoch in trainer.epochs():
            result = trainer.run_epoch(epoch)
        assert np.isfinite(result.metrics["train_loss"])
        checkpoint = root / "checkpoints" / member.name
        checkpoint.mkdir(parents=True)
        trainer.write_checkpoint(checkpoint, result)
        checkpoints[member.name] = str(checkpoint)
    organs = {name: tuple(data.label_set.names) for name in checkpoints}
    model_dir, _ = export_model_dir(config, checkpoints, organs, label_set=data.label_set)
    return model_dir, dataset


def assert_cli_predicts(capsys, first: Path, model_dir: Path, tmp_path: Path, labels) -> None:
    """``organseg predict FIRST --local MODEL`` (the case's other channel files found beside
    ``first``) writes exactly ``labels``."""
    out = tmp_path / "pred.nii.gz"
    code, _, err = run_cli(
        capsys, "predict", first, "--local", model_dir, "-o", out, "--device", "cpu"
    )
    assert code == 0, err
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(written, labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return train_stacked(tmp_path_factory.mktemp("phases"))


def test_one_sample_per_case_with_every_channel(trained: tuple[Path, Path], tmp_path) -> None:
    _, dataset_root = trained
    dataset = open_nnunet(dataset_root)
    assert stacks_channels(dataset, None)  # two CT channels: nnU-Net's reading is the default
    assert not stacks_channels(dataset, "separate")
    refs = dataset_refs(dataset, stack=True)
    assert [r.case_id for r in refs] == ["synth_001", "synth_002"]
    assert refs[0].stacked == (Modality.CT, Modality.CT)
    # separately, two channels of one modality cannot be told apart: refused, pointing to stacking
    with pytest.raises(DataError, match=r"dataset\.channels: stack"):
        dataset_refs(dataset)


def test_the_model_directory_records_its_channels(trained: tuple[Path, Path], capsys) -> None:
    model_dir, _ = trained
    spec = load_spec(model_dir)
    assert channel_pairs(spec.preprocess) == (
        ("arterial", Modality.CT),
        ("venous", Modality.CT),
    )
    assert describe_model_dir(model_dir)["input"]["channels"] == [
        {"name": "arterial", "modality": "CT"},
        {"name": "venous", "modality": "CT"},
    ]
    code, out, err = run_cli(capsys, "models", "show", model_dir)
    assert code == 0, err
    assert "2 channels stacked: arterial (CT), venous (CT)" in out


def test_predict_local_reads_both_channel_files(
    trained: tuple[Path, Path], tmp_path, capsys
) -> None:
    model_dir, dataset_root = trained
    predictor = EnsemblePredictor(model_dir, device="cpu")
    first = dataset_root / "imagesTr" / "synth_001_0000.nii.gz"
    (plan,) = plan_inputs(first, channels=channel_pairs(predictor.spec.preprocess))
    item = plan.load()
    assert sorted(item.channels) == ["arterial", "venous"]
    prediction = predictor.predict(item.image, channels=item.channels)
    assert prediction.labels.shape == item.image.shape
    assert "channels arterial, venous stacked" in prediction.modality_reason
    # each channel is windowed as CT on its own and stacked in the model's order
    _, prepared = prepare_channels_input(predictor.spec, item.channels)
    assert prepared.channels == 2
    assert [m.value for m in prepared.modalities] == ["CT", "CT"]
    assert not np.array_equal(prepared.array[:, 0], prepared.array[:, 1])

    assert_cli_predicts(capsys, first, model_dir, tmp_path, prediction.labels.array)


def test_a_missing_or_extra_channel_is_named(trained: tuple[Path, Path], tmp_path) -> None:
    model_dir, dataset_root = trained
    spec = load_spec(model_dir)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(dataset_root / "imagesTr" / "synth_001_0000.nii.gz", folder)
    (plan,) = plan_inputs(folder, channels=channel_pairs(spec.preprocess))
    with pytest.raises(DataError, match=r"lacks channel\(s\) venous \(synth_001_0001.nii.gz\)"):
        plan.load()
    shutil.copy(dataset_root / "imagesTr" / "synth_001_0001.nii.gz", folder)
    shutil.copy(
        dataset_root / "imagesTr" / "synth_001_0001.nii.gz", folder / "synth_001_0002.nii.gz"
    )
    with pytest.raises(DataError, match=r"more channels than the model takes \(synth_001_0002"):
        plan.load()
    (folder / "synth_001_0002.nii.gz").unlink()
    item = plan.load()
    predictor = EnsemblePredictor(model_dir, device="cpu")
    with pytest.raises(ModalityError, match="missing channel\\(s\\) venous"):
        predictor.predict(item.image, channels={"arterial": item.channels["arterial"]})
    with pytest.raises(
        ModalityError, match="reads the channels arterial \\(CT\\), venous \\(CT\\)"
    ):
        predictor.predict(item.image, "CT")  # one series for a two-channel model
    moved = dict(item.channels)
    venous = moved["venous"]
    moved["venous"] = type(venous)(venous.array[1:], venous.geometry, venous.modality, venous.meta)
    with pytest.raises(DataError, match=r"channel 'venous' .* is not on the grid of channel"):
        predictor.predict(item.image, channels=moved)


# -- checks before training (no training) --------------------------------------------------------
@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phases-check")
    return write_abdomen_dataset(root / "ds", cases=2, size=32, slices=6, seed=3, venous=True)


def test_config_check_names_the_member_and_the_channels_it_needs(
    phases: Path, tmp_path: Path, capsys
) -> None:
    code, out, err = run_cli(capsys, "config", "check", write_config(tmp_path, phases))
    assert code == 0, err
    assert "2 channels stacked: arterial, venous" in out
    code, _, err = run_cli(capsys, "config", "check", write_config(tmp_path, phases, in_channels=1))
    assert code == 2
    assert "Traceback" not in err
    assert "members.0.in_channels: member 'attn2' takes 1 channel(s)" in err
    assert "set in_channels: 2" in err
    with pytest.raises(ConfigError, match=r"members\.0\.in_channels"):
        prepare_data(load_config(write_config(tmp_path, phases, in_channels=3)))


def test_a_channel_on_another_grid_is_named_before_training(
    phases: Path, tmp_path: Path, capsys
) -> None:
    broken = shutil.copytree(phases, tmp_path / "broken")
    path = broken / "imagesTr" / "synth_002_0001.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetSpacing((2.0, 2.0, 5.0))
    sitk.WriteImage(image, str(path))
    code, _, err = run_cli(capsys, "config", "check", write_config(tmp_path, broken))
    assert code == 2
    assert "Traceback" not in err
    assert "synth_002_0001.nii.gz: case synth_002: channel 'venous' is on another grid" in err
    code, out, err = run_cli(capsys, "data", "inspect", broken, "--json")
    assert "synth_002_0001.nii.gz" in out + err


def test_channels_key_is_for_nnunet_and_msd_only(tmp_path: Path) -> None:
    data = yaml.safe_load(write_config(tmp_path, tmp_path).read_text())
    data["dataset"] = {"synthetic": {"ct": 1}, "channels": "stack"}
    (tmp_path / "chaos.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"dataset\.channels combines the channels"):
        load_config(tmp_path / "chaos.yaml")


def test_the_msd_copy_prepares_the_same_stacked_slices(phases: Path, tmp_path: Path) -> None:
    """The MSD form of the two-phase dataset (``data synth --format msd --venous``: 4D images, the
    channel modality map carried into its dataset.json) stacks the same two channels: same samples,
    prepared slices, label maps and split as the nnU-Net form."""
    msd = write_abdomen_dataset(
        tmp_path / "msd", cases=2, size=32, slices=6, seed=3, format="msd", venous=True
    )
    manifest = json.loads((msd / "dataset.json").read_text())
    assert manifest["modality"] == {"0": "arterial", "1": "venous"}
    assert manifest["organseg_channel_modalities"] == {"arterial": "CT", "venous": "CT"}
    assert sitk.ReadImage(str(msd / "imagesTr" / "synth_001.nii.gz")).GetDimension() == 4

    def prepared(dataset: Path, name: str):
        config = load_config(write_config(tmp_path / name, dataset))
        data = prepare_data(config)
        assert [c.name for c in config.preprocess.channels] == PHASE_CHANNELS
        return data

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = prepared(phases, "a"), prepared(msd, "b")
    assert all(a.cache.volume(s.id)[0].shape[1] == 2 for s in a.cache.samples)  # both stacked
    assert_same_preparation(a, b)


def test_single_channel_datasets_keep_their_cache_fingerprint(tmp_path: Path) -> None:
    """Existing configs and caches: nothing of the channels is written when there are none."""
    from organseg.preprocess.config import PreprocessConfig
    from organseg.preprocess.dataset import cache_fingerprint

    cfg = PreprocessConfig()
    assert cfg.fingerprint() == "c7e4a69e904fb8d6"  # the default's fingerprint before channels
    assert "channels" not in cfg.model_dump(mode="json")
    assert "channels" not in json.loads(cfg.model_dump_json())
    assert cache_fingerprint(cfg, ["liver"]) == cache_fingerprint(
        PreprocessConfig(**cfg.model_dump(mode="json")), ["liver"]
    )


def test_the_data_md_example_writes_and_inspects_a_two_phase_dataset(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/data.md, "Several channels per case": its commands, run as written."""
    from tests.conftest import REPO_ROOT
    from tests.docs.blocks import block_under, command_lines

    commands = command_lines(
        block_under(REPO_ROOT / "docs" / "data.md", "Several channels per case")
    )
    monkeypatch.chdir(tmp_path)
    outputs = []
    for words in commands:
        assert words[0] == "organseg"
        code, out, err = run_cli(capsys, *words[1:])
        assert code == 0, err
        outputs.append(out)
    meta = json.loads((tmp_path / "data" / "phases" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "arterial", "1": "venous"}
    assert (tmp_path / "data" / "phases" / "imagesTr" / "synth_002_0001.nii.gz").is_file()
    assert "arterial" in outputs[-1]
