"""Every experiment config under configs/ validates, makes sense for its CHAOS task, and keeps the seeds' recipes.

Validation is the real loader (`organseg.config.load_config`); the checks beyond it are the rules the
schema cannot see on one member at a time: which sample layouts a member's modalities produce, whether
its network can take them, and what an all-organ task needs of its CT and MR members.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from organseg.config import ExperimentConfig, MemberConfig, load_config
from organseg.io.volume import Modality
from organseg.models import get_member_spec
from organseg.preprocess.channels import to_channels
from organseg.tasks import ALL_ORGANS, get_task

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TASK_CONFIGS = {
    1: ROOT / "configs" / "task1-liver-ct-mr.yaml",
    2: ROOT / "configs" / "task2-liver-ct.yaml",
    3: ROOT / "configs" / "task3-liver-mr.yaml",
    4: ROOT / "configs" / "task4-organs-ct-mr.yaml",
    5: ROOT / "configs" / "task5-organs-mr.yaml",
}
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
MR_TASKS = (1, 3, 4, 5)


def _load(path: Path) -> ExperimentConfig:
    return load_config(path)


def sample_channels(config: ExperimentConfig, modality: Modality) -> int | None:
    """Channels of one preprocessed slice of ``modality``; None where it yields no sample of its own."""
    if modality is Modality.MR_T1_IN and config.preprocess.t1_mode == "stack":
        return 2
    if modality is Modality.MR_T1_OUT and config.preprocess.t1_mode == "stack":
        return None  # consumed as the in-phase series' partner
    return 1


def sensible_feed(channels: int, in_channels: int) -> bool:
    """Layouts whose channel adaptation keeps each channel's meaning (to_channels also allows 1 → 2,
    which would feed a grey slice into both T1 paths of the multi-path network)."""
    return channels == in_channels or (channels, in_channels) in {(1, 3), (2, 1), (2, 3)}


def test_every_config_is_covered() -> None:
    names = {p.name for p in CONFIGS}
    assert {p.name for p in TASK_CONFIGS.values()} | {"quickstart.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_without_its_data(path: Path) -> None:
    config = _load(path)
    assert config.name == path.stem, "a config's name is its file name, so runs are easy to find"
    raw = yaml.safe_load(path.read_text())
    if raw["dataset"].get("path") is not None:
        # relative to the config file, and not needed to validate
        assert config.dataset.path == (path.parent / raw["dataset"]["path"]).resolve()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_members_can_take_their_modalities(path: Path) -> None:
    config = _load(path)
    for member in config.members:
        spec = get_member_spec(member.arch)
        assert member.modalities, member.name
        if member.encoder_weights is not None:
            assert spec.pretrainable, member.name
            assert member.encoder_weights == "imagenet", member.name
            assert member.in_channels == 3, f"{member.name}: ImageNet encoders take 3 channels"
        for modality in member.modalities:
            channels = sample_channels(config, modality)
            assert channels is not None, (
                f"{path.name}: {member.name} accepts {modality.value}, which has no samples of its own "
                f"with t1_mode={config.preprocess.t1_mode!r} (accept MR-T1-in, the stacked pair)"
            )
            assert sensible_feed(channels, member.in_channels), (
                f"{path.name}: {member.name} (in_channels={member.in_channels}) cannot sensibly take "
                f"{modality.value} slices of {channels} channel(s)"
            )
            adapted = to_channels(np.zeros((2, channels, 8, 8), np.float32), member.in_channels)
            assert adapted.shape == (2, member.in_channels, 8, 8)


@pytest.mark.parametrize("task", sorted(TASK_CONFIGS))
def test_task_config_covers_every_modality_of_its_task(task: int) -> None:
    config = _load(TASK_CONFIGS[task])
    assert config.task == task
    served = {m for member in config.members for m in member.modalities or []}
    for modality in get_task(task).modalities:
        if sample_channels(config, modality) is None:
            continue  # the out-phase series is served through its in-phase partner
        members = [m.name for m in config.members if modality in (m.modalities or [])]
        assert modality in served
        assert len(members) >= 2, (
            f"task {task}: {modality.value} needs an ensemble (members: {members})"
        )


@pytest.mark.parametrize("task", [4, 5])
def test_all_organ_tasks_keep_ct_and_mr_members_apart(task: int) -> None:
    config = _load(TASK_CONFIGS[task])
    for member in config.members:
        modalities = member.modalities or []
        if Modality.CT in modalities:
            assert all(m is Modality.CT for m in modalities), (
                f"{member.name} mixes CT with MR and would learn only the liver on MR"
            )
            assert get_task(task).organs_for(modalities) == ("liver",)
        else:
            assert get_task(task).organs_for(modalities) == ALL_ORGANS


def test_task2_is_the_winning_ct_ensemble() -> None:
    config = _load(TASK_CONFIGS[2])
    assert [(m.name, m.arch) for m in config.members] == [
        ("dualtail", "dualtail"),
        ("ternausnet", "ternausnet"),
        ("linknet34", "linknet34"),
        ("unet-resnet50", "unet_resnet50"),
        ("unet-se-resnet50", "unet_se_resnet50"),
    ]
    assert config.preprocess.size == 512
    assert config.preprocess.ct_window == (-160.0, 240.0)
    assert (config.postprocess.threshold, config.postprocess.component_threshold) == (0.5, 0.6)
    losses = {m.name: (m.resolved_loss(), m.dice_weight) for m in config.members}
    assert losses["dualtail"][0] == losses["linknet34"][0] == "dice"
    for name in ("ternausnet", "unet-resnet50", "unet-se-resnet50"):
        assert losses[name] == ("dice_bce", 0.5)
    for m in config.members:
        assert m.modalities == [Modality.CT]
        assert (m.optimizer.name, m.optimizer.lr) == ("adam", 1e-4)
        assert (m.scheduler.factor, m.scheduler.patience) == (0.5, 5)
        assert (m.batch_size, m.epochs) == (4, 60)
        assert m.use_gpu
        assert m.num_workers == 1
        assert m.gpu_fraction <= 0.5
        pretrained = get_member_spec(m.arch).pretrainable
        assert m.encoder_weights == ("imagenet" if pretrained else None), m.name
        assert m.in_channels == (3 if pretrained else 1), m.name


def _by_arch(config: ExperimentConfig, arch: str) -> MemberConfig:
    found = [m for m in config.members if m.arch == arch]
    assert len(found) == 1, f"{config.name}: expected one {arch} member"
    return found[0]


@pytest.mark.parametrize("task", MR_TASKS)
def test_mr_tasks_have_the_cgan_cascade_and_the_multipath_network(task: int) -> None:
    config = _load(TASK_CONFIGS[task])
    assert config.preprocess.t1_mode == "stack"
    cascade = _by_arch(config, "cascade")
    assert list(cascade.kwargs.get("stages", [])) == ["v19unet", "v19unet"]
    assert cascade.adversarial.enabled
    assert cascade.adversarial.lam > 0
    assert cascade.encoder_weights == "imagenet"
    assert Modality.MR_T1_IN in (cascade.modalities or [])
    assert Modality.MR_T2SPIR in (cascade.modalities or [])
    multipath = _by_arch(config, "multipath")
    assert multipath.in_channels == 2
    assert multipath.modalities == [Modality.MR_T1_IN]
    assert multipath.kwargs.get("modality_dropout") == 0.25


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_tune_sections_search_what_the_seeds_tuned(path: Path) -> None:
    from organseg.train.tune import search_space

    config = _load(path)
    assert config.tune is not None, "every shipped config can be tuned as it is"
    if path in TASK_CONFIGS.values():
        assert (config.tune.lr.low, config.tune.lr.high, config.tune.lr.log) == (1e-5, 1e-3, True)
        assert config.tune.dice_weight is not None
        assert (config.tune.dice_weight.low, config.tune.dice_weight.high) == (0.2, 1.0)
    for member in config.members:
        space = search_space(config, member)
        # The Dice/BCE weighting is searched only where a member trains with that weighted loss;
        # a Dice-only member (DualTail-Net, LinkNet34) keeps its loss and tunes the learning rate.
        if member.adversarial.enabled:
            expected = {"lr", "adversarial_lam"}
        elif member.resolved_loss() == "dice_bce":
            expected = {"lr", "dice_weight"}
        else:
            expected = {"lr"}
        assert set(space) == expected, f"{path.name}: {member.name} searches {sorted(space)}"


def test_quickstart_is_small_cpu_only_and_synthetic() -> None:
    config = _load(QUICKSTART)
    assert config.task == 1
    synthetic = config.dataset.synthetic
    assert synthetic is not None
    assert config.dataset.path is None
    assert (synthetic.ct, synthetic.mr, synthetic.size, synthetic.slices) == (4, 4, 64, 16)
    assert (config.preprocess.size, config.preprocess.t1_mode) == (64, "separate")
    assert len(config.members) == 2
    for m in config.members:
        assert not m.use_gpu
        assert m.encoder_weights is None
        assert set(m.modalities or []) == {Modality.CT, Modality.MR_T2SPIR}
        assert m.kwargs == {"base_channels": 8, "depth": 4}
        assert m.batch_size == 8
        assert 5 <= m.epochs <= 40
    assert config.model_dir() == Path.cwd() / "runs" / "quickstart" / "model"
