"""Training from an nnU-Net or MSD dataset with its own label set, end to end.

One synthetic nine-label abdominal CT dataset (nnU-Net v2 raw) is trained once per module by
``organseg train`` on the session's Ray cluster (two members in parallel, one epoch, 32² slices); the
model directory records the label set, ``predict --local`` writes a label map of its values and
``organseg evaluate --labels`` scores it per label. The MSD copy of the dataset gives the same
prepared slices and targets, compared without training again. Broken datasets end in one error
naming file and key at ``organseg config check``, before anything trains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from organseg.config import dump_config, load_config
from organseg.datasets.write import nnunet_to_msd
from organseg.ensemble.spec import load_spec
from organseg.labels import LabelSet
from organseg.synth.abdomen import ABDOMEN_LABELS, abdomen_label_set, write_abdomen_dataset
from organseg.train.data import prepare_data
from tests.conftest import cli_exit_code, run_cli


def _config(root: Path, dataset: Path, name: str = "abdomen", **dataset_keys: object) -> Path:
    member = {"in_channels": 1, "epochs": 1, "batch_size": 8, "optimizer": {"lr": 0.002}}
    data = {
        "name": name,
        "storage_path": str(root / "runs"),
        "dataset": {"path": str(dataset), "val_fraction": 0.34, **dataset_keys},
        "preprocess": {"size": 32},
        "augment": {"enabled": False},
        "members": [
            {"name": "dualtail", "arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}}
            | member,
            {"name": "attn", "arch": "attention_unet", "kwargs": {"base_channels": 8, "depth": 3}}
            | member,
        ],
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def nnunet_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("abdomen")
    return write_abdomen_dataset(root / "nnunet", cases=3, size=32, slices=8, seed=1)


def _docs_example() -> tuple[str, list[list[str]]]:
    """The README's "Bring your own data" (and docs/data.md's "Train on your own data", the same):
    the config to save and the commands to run."""
    from tests.conftest import REPO_ROOT
    from tests.docs.blocks import block_under, command_lines

    readme = REPO_ROOT / "README.md", "Bring your own data"
    page = REPO_ROOT / "docs" / "data.md", "Train on your own data"
    config, commands = block_under(*readme, "yaml").text, command_lines(block_under(*readme))
    # the docs page repeats the example for the site's readers: the same words, run once here
    assert block_under(*page, "yaml").text == config
    assert command_lines(block_under(*page)) == commands
    return config, commands


@pytest.fixture(scope="module")
def trained(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's example up to training, run as written in a fresh folder (two members in parallel
    by ``organseg train`` on the session's Ray cluster); returns that folder."""
    root = tmp_path_factory.mktemp("docs-example")
    config, commands = _docs_example()
    (root / "abdomen.yaml").write_text(config)
    before = Path.cwd()
    os.chdir(root)
    try:
        for words in commands[:3]:
            assert words[0] == "organseg"
            assert cli_exit_code(*words[1:]) == 0, words
    finally:
        os.chdir(before)
    return root


# -- configuration and checks (no Ray) ------------------------------------------------------------
def test_format_is_detected_and_the_task_is_not_needed(
    nnunet_dataset: Path, tmp_path: Path
) -> None:
    config = load_config(_config(tmp_path, nnunet_dataset))
    assert config.dataset.format == "nnunet"
    assert config.members[0].modalities is None  # the dataset's channels decide
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(dump_config(config))
    assert "task" not in yaml.safe_load(dumped.read_text())
    assert load_config(dumped) == config
    raw = yaml.safe_load(_config(tmp_path, nnunet_dataset).read_text())
    raw["task"] = 2
    (tmp_path / "with-task.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=r"task: task is a CHAOS task; this nnunet dataset"):
        load_config(tmp_path / "with-task.yaml")


def test_config_check_reads_the_dataset(nnunet_dataset: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "config", "check", _config(tmp_path, nnunet_dataset))
    assert code == 0, err
    assert "nnunet dataset of 3 case(s), 9 labels" in out
    assert "inferior_vena_cava" in out


def _broken_copy(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def _with_ignore_band(src: Path, dest: Path) -> Path:
    """A copy whose dataset.json has ``ignore`` 10 and whose synth_001 leaves its top four rows
    unannotated."""
    ds = _broken_copy(src, dest)
    meta = json.loads((ds / "dataset.json").read_text())
    meta["labels"]["ignore"] = 10
    (ds / "dataset.json").write_text(json.dumps(meta))
    path = ds / "labelsTr" / "synth_001.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[:, :4] = 10
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))
    return ds


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("missing-label", r"labelsTr/synth_002\.nii\.gz: missing"),
        ("num-training", r"dataset\.json: numTraining: is 7 but"),
        ("unknown-value", r"synth_001\.nii\.gz: case synth_001: label value\(s\) \[12\] not in"),
        ("unknown-channel", r"dataset\.json: channel_names\.0 \('T1'\): the modality"),
        ("regions", r"regions_class_order"),
        ("fold", r"splits_final\.json: absent"),
    ],
)
def test_config_check_names_file_and_key_of_a_broken_dataset(
    nnunet_dataset: Path, tmp_path: Path, capsys, breakage: str, expected: str
) -> None:
    ds = _broken_copy(nnunet_dataset, tmp_path / "ds")
    meta = json.loads((ds / "dataset.json").read_text())
    extra: dict[str, object] = {}
    if breakage == "missing-label":
        (ds / "labelsTr" / "synth_002.nii.gz").unlink()
    elif breakage == "num-training":
        meta["numTraining"] = 7
    elif breakage == "unknown-value":
        path = ds / "labelsTr" / "synth_001.nii.gz"
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
        array[0, 0, 0] = 12
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(path))
    elif breakage == "unknown-channel":
        meta["channel_names"] = {"0": "T1"}
    elif breakage == "regions":
        labels = {"background": 0, "organs": [1, 2, 3, 4, 5, 6, 7, 8, 9], "liver": [1]}
        meta["labels"], meta["regions_class_order"] = labels, [1, 2]
    elif breakage == "fold":
        extra["fold"] = 1
    (ds / "dataset.json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "config", "check", _config(tmp_path, ds, **extra))
    assert code == 2
    assert "Traceback" not in err
    import re

    assert re.search(expected, err), err


# -- the loss leaves the ignore label out -----------------------------------------------------------
@pytest.mark.parametrize("loss", ["dice", "bce", "dice_bce"])
def test_ignored_voxels_are_left_out_of_the_loss(loss: str) -> None:
    import torch

    from organseg.labels import IGNORE_TARGET
    from organseg.losses import build_loss

    fn = build_loss(loss, dice_weight=0.5)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator)
    target = (torch.rand(2, 3, 8, 8, generator=generator) > 0.5).float()
    ignored = torch.zeros(2, 8, 8, dtype=torch.bool)
    ignored[:, :4] = True  # the top half is not annotated
    masked = target.clone()
    masked[ignored.unsqueeze(1).expand_as(masked)] = IGNORE_TARGET
    base = fn(logits, masked)
    # whatever the network says on ignored voxels, the loss does not move ...
    other = logits.clone()
    other[ignored.unsqueeze(1).expand_as(other)] = 50.0
    assert torch.allclose(fn(other, masked), base)
    # ... and it equals the loss over the annotated half alone
    assert torch.allclose(base, fn(logits[:, :, 4:], target[:, :, 4:]), atol=1e-6)
    # while an unmasked target does see those voxels
    assert not torch.allclose(fn(other, target), fn(logits, target))
    # and gradients reach no ignored voxel
    leaf = logits.clone().requires_grad_(True)
    fn(leaf, masked).backward()
    assert leaf.grad is not None
    assert leaf.grad[ignored.unsqueeze(1).expand_as(leaf.grad)].abs().max() == 0


def test_the_ignore_label_reaches_the_targets_as_ignored(
    nnunet_dataset: Path, tmp_path: Path
) -> None:
    """An ``ignore`` label in dataset.json: its voxels are IGNORE_TARGET in every channel and count in
    no validation Dice."""
    from organseg.labels import IGNORE_TARGET
    from organseg.preprocess.dataset import SliceDataset

    ds = _with_ignore_band(nnunet_dataset, tmp_path / "ds")
    config = load_config(_config(tmp_path, ds, cache_dir=str(tmp_path / "cache")))
    data = prepare_data(config)
    assert data.cache.ignore == 10
    dataset = SliceDataset(data.cache, ["synth_001"], list(data.label_set.names))
    _, target = dataset[4]
    assert target.shape[0] == 9
    assert (target[:, :4] == IGNORE_TARGET).all()  # prepared at the dataset's own 32² size
    assert (target[:, 4:] != IGNORE_TARGET).all()
    assert set(np.unique(target.numpy())) <= {IGNORE_TARGET, 0.0, 1.0}


def test_3d_patches_carry_label_values_and_the_ignore_label(
    nnunet_dataset: Path, tmp_path: Path
) -> None:
    """3D members read the slice cache resampled once: their patch targets have one channel per
    label, ignored voxels marked, and no patch is centred on an unannotated voxel."""
    from organseg.labels import IGNORE_TARGET
    from organseg.preprocess.volume_config import VolumeConfig
    from organseg.preprocess.volumes import PatchDataset, VolumeCache

    ds = _with_ignore_band(nnunet_dataset, tmp_path / "ds")
    data = prepare_data(load_config(_config(tmp_path, ds, cache_dir=str(tmp_path / "cache"))))
    volumes = VolumeCache.build(data.cache, ["synth_001"], (2.0, 2.0, 4.0))
    assert volumes.label_values == data.cache.label_values
    assert volumes.ignore == 10
    _, labels, foreground = volumes.volume("synth_001")
    assert (np.asarray(labels) == 10).any()
    assert not (np.asarray(labels)[tuple(np.asarray(foreground).T)] == 10).any()
    whole = tuple(max(8, int(n)) for n in np.asarray(labels).shape)  # one patch: the whole volume
    cfg = VolumeConfig(spacing=(2.0, 2.0, 4.0), patch=whole, foreground_fraction=0.0, augment=[])
    patches = PatchDataset(volumes, ["synth_001"], list(data.label_set.names), cfg, 1)
    targets = patches[0][1].numpy().reshape(9, -1)
    assert set(np.unique(targets)) <= {IGNORE_TARGET, 0.0, 1.0}
    assert (targets == IGNORE_TARGET).any()
    ignored = (targets == IGNORE_TARGET).any(axis=0)
    assert (targets[:, ignored] == IGNORE_TARGET).all()  # every channel, or none


def test_members_that_feed_targets_to_a_network_are_refused_with_an_ignore_label(
    nnunet_dataset: Path, tmp_path: Path
) -> None:
    from organseg.errors import ConfigError

    ds = _broken_copy(nnunet_dataset, tmp_path / "ds")
    meta = json.loads((ds / "dataset.json").read_text())
    meta["labels"]["ignore"] = 10
    (ds / "dataset.json").write_text(json.dumps(meta))
    raw = yaml.safe_load(_config(tmp_path, ds).read_text())
    raw["members"][1]["adversarial"] = {"enabled": True}
    (tmp_path / "cgan.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"members\.1: member 'attn' \(adversarial\.enabled\)"):
        prepare_data(load_config(tmp_path / "cgan.yaml"))


def test_validation_dice_leaves_the_ignore_label_out() -> None:
    import torch

    from organseg.train.validation import validate

    class Liver(torch.nn.Module):  # predicts liver wherever the image is bright
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :1] - 0.5) * 40.0

    labels = np.zeros((2, 8, 8), np.uint8)
    labels[:, 2:6, 2:6] = 3  # liver, value 3 in this label set
    labels[:, 6:, :] = 7  # not annotated
    image = np.zeros((2, 1, 8, 8), np.float32)
    image[:, :, 2:8, 2:6] = 1.0  # "liver" predicted on the liver and on unannotated voxels
    kwargs = {"in_channels": 1, "device": torch.device("cpu"), "values": [3]}
    seen = validate(Liver(), [(image, labels)], ["liver"], **kwargs)
    ignored = validate(Liver(), [(image, labels)], ["liver"], ignore=7, **kwargs)
    assert seen["val_dice"] < 0.9
    assert ignored["val_dice"] == pytest.approx(1.0)
    assert ignored["val_soft_dice"] > seen["val_soft_dice"]


# -- trained end to end -----------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_model_dir_records_the_label_set(trained: Path) -> None:
    model_dir = trained / "models" / "abdomen"
    spec = load_spec(model_dir)
    assert spec.task is None
    assert spec.organs == list(ABDOMEN_LABELS)
    assert spec.label_set() == LabelSet.from_dict(abdomen_label_set().to_dict())
    assert [m.name for m in spec.members] == ["dualtail", "attn"]
    for member in spec.members:
        assert member.organs == list(ABDOMEN_LABELS)
        assert [m.value for m in member.modalities] == ["CT"]
    described = json.loads((model_dir / "dualtail" / "member.json").read_text())
    assert described["organs"] == list(ABDOMEN_LABELS)
    assert {f"val_dice_{o}" for o in ABDOMEN_LABELS} <= set(described["metrics"])


@pytest.mark.ray
@pytest.mark.slow
def test_predict_and_evaluate_as_the_docs_say(
    trained: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predict --local`` writes a label map in the label set's values; ``evaluate --labels`` scores
    it per label."""
    monkeypatch.chdir(trained)
    _, commands = _docs_example()
    assert [w[:2] for w in commands[3:]] == [["organseg", "predict"], ["organseg", "evaluate"]]
    for words in commands[3:]:
        code, _, err = run_cli(capsys, *words[1:])
        assert code == 0, (words, err)
    pred = sitk.ReadImage(str(trained / "synth_003.nii.gz"))
    reference = sitk.ReadImage(str(trained / "data/abdomen-nnunet/labelsTr/synth_003.nii.gz"))
    assert pred.GetSize() == reference.GetSize()
    values = set(np.unique(sitk.GetArrayFromImage(pred)).tolist())
    assert values <= {0, *range(1, 10)}
    assert (trained / "overlay" / "montage.png").is_file()
    per_label = json.loads((trained / "scores.json").read_text())["labels"]
    assert list(per_label) == list(ABDOMEN_LABELS)
    assert {"dice", "hd95", "assd", "ravd", "nsd"} <= set(per_label["pancreas"])


def test_msd_copy_prepares_the_same_slices_and_targets(
    nnunet_dataset: Path, tmp_path: Path
) -> None:
    """The MSD copy of the dataset trains the same: same samples, prepared slices, label maps and
    split (what the members read), so training it again would repeat the nnU-Net run."""
    msd = nnunet_to_msd(nnunet_dataset, tmp_path / "msd")
    a = prepare_data(
        load_config(_config(tmp_path, nnunet_dataset, "a", cache_dir=str(tmp_path / "a")))
    )
    b = prepare_data(load_config(_config(tmp_path, msd, "b", cache_dir=str(tmp_path / "b"))))
    assert_same_preparation(a, b)


def assert_same_preparation(a, b) -> None:
    """Two prepared datasets (:func:`prepare_data`) hold the same label set, split, samples, prepared
    slices, label maps, modalities and organ voxels: what the members read."""
    assert b.label_set == a.label_set
    assert (a.train_ids, a.val_ids) == (b.train_ids, b.val_ids)
    assert [s.id for s in a.cache.samples] == [s.id for s in b.cache.samples]
    for sample in a.cache.samples:
        image_a, labels_a = a.cache.volume(sample.id)
        image_b, labels_b = b.cache.volume(sample.id)
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(labels_a, labels_b)
        assert b.cache.sample(sample.id).modalities == sample.modalities
        assert b.cache.sample(sample.id).organ_voxels == sample.organ_voxels


# -- CHAOS converted to nnU-Net trains like its CHAOS form ----------------------------------------
def _caches_match(chaos_config: dict, nnunet_root: Path, tmp_path: Path, kind: str) -> int:
    """The slice caches built from the CHAOS folder and from its nnU-Net conversion hold the same
    prepared slices and label maps, sample for sample; returns how many were compared."""
    from organseg.config import parse_config

    chaos = prepare_data(parse_config(chaos_config, base=tmp_path))
    member = {"name": "m", "arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}}
    converted_config = {
        "name": "converted",
        "storage_path": str(tmp_path / "runs"),
        "dataset": {"path": str(nnunet_root), "cache_dir": str(tmp_path / "converted-cache")},
        "preprocess": chaos_config["preprocess"],
        "members": [member],
    }
    converted = prepare_data(parse_config(converted_config, base=tmp_path))
    assert converted.label_set is not None
    assert converted.cache.organs == chaos.cache.organs
    compared = 0
    for sample in converted.cache.samples:
        number = sample.patient.rsplit("_", 1)[-1]  # chaos_mr_3 → MR/3
        suffix = sample.id[len(sample.patient) :]
        original = chaos.cache.sample(f"{kind}/{number}{suffix}")
        image_a, labels_a = converted.cache.volume(sample.id)
        image_b, labels_b = chaos.cache.volume(original.id)
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(labels_a, labels_b)
        assert sample.modalities == original.modalities
        assert sample.organ_voxels == original.organ_voxels
        compared += 1
    return compared


def test_converted_synthetic_mr_t1_trains_on_the_same_slices(
    synth_root: Path, tmp_path: Path
) -> None:
    from organseg.datasets.convert import convert_chaos_to_nnunet

    written = convert_chaos_to_nnunet(synth_root / "Train_Sets" / "MR", tmp_path / "out")
    t1 = next(p for p in written if p.name.endswith("T1DUAL"))
    member = {"name": "m", "arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}}
    chaos_config = {
        "name": "chaos",
        "task": 5,
        "storage_path": str(tmp_path / "runs"),
        "dataset": {"path": str(synth_root), "cache_dir": str(tmp_path / "chaos-cache")},
        "preprocess": {"size": 64, "t1_mode": "stack"},
        "members": [member | {"modalities": ["MR-T1-in"]}],
    }
    assert _caches_match(chaos_config, t1, tmp_path, "MR") == 2  # both MR patients, stacked in+out


@pytest.mark.sample
@pytest.mark.slow
def test_converted_real_chaos_ct_case_trains_on_the_same_slices(
    chaos_sample: Path, tmp_path: Path
) -> None:
    from organseg.datasets.convert import convert_chaos_to_nnunet

    [ct] = convert_chaos_to_nnunet(chaos_sample, tmp_path / "out")
    member = {"name": "m", "arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}}
    chaos_config = {
        "name": "chaos",
        "task": 2,
        "storage_path": str(tmp_path / "runs"),
        "dataset": {"path": str(chaos_sample), "cache_dir": str(tmp_path / "chaos-cache")},
        "preprocess": {"size": 128},
        "members": [member],
    }
    assert _caches_match(chaos_config, ct, tmp_path, "CT") == 1
