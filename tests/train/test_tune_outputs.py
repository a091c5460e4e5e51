"""What `organseg tune` writes, without running a study: the best config keeps paths as given and
every member's loss kind, and the trial plot's log axis stays legible."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from organseg.config import load_config
from organseg.errors import ConfigError
from organseg.train.tune import (
    GivenPaths,
    apply_params,
    best_config_text,
    search_space,
    trials_figure,
    untuned_note,
)
from tests.conftest import tiny_experiment


def test_a_members_loss_kind_is_kept(tmp_path: Path) -> None:
    config = tiny_experiment(tmp_path, "kinds")
    dice_member = config.member("dualtail")  # DualTail-Net trains with Dice
    assert dice_member.resolved_loss() == "dice"
    assert set(search_space(config, dice_member)) == {"lr"}
    assert "tuning the learning rate only" in untuned_note(config, dice_member)
    with pytest.raises(ConfigError, match="dice_weight only applies to loss: dice_bce"):
        apply_params(dice_member, {"dice_weight": 0.3})
    weighted = config.member("attn")
    assert weighted.resolved_loss() == "dice_bce"
    assert set(search_space(config, weighted)) == {"lr", "dice_weight"}
    assert untuned_note(config, weighted) is None
    tuned = apply_params(weighted, {"lr": 1e-4, "dice_weight": 0.3})
    assert (tuned.resolved_loss(), tuned.dice_weight, tuned.optimizer.lr) == ("dice_bce", 0.3, 1e-4)


def test_best_config_keeps_paths_as_given(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "data" / "Train_Sets").mkdir(parents=True)
    monkeypatch.chdir(project)
    source = project / "configs" / "exp.yaml"
    source.write_text(
        "name: exp\ntask: 2\nstorage_path: runs\ndataset: {path: ../data}\n"
        "members:\n  - {name: m, arch: attention_unet, modalities: [CT]}\n"
        "tune: {num_samples: 1}\n"
    )
    config = load_config(source)
    assert Path(config.storage_path).is_absolute()  # resolved for Ray workers
    given = GivenPaths.of({"storage_path": "runs", "dataset": {"path": "../data"}}, source.parent)
    best = project / "runs" / "exp" / "tune" / "best.yaml"
    best.parent.mkdir(parents=True)
    best.write_text(best_config_text(config, given, best))
    text = best.read_text()
    assert "storage_path: runs\n" in text
    assert str(project) not in text  # no absolute path of this machine
    again = load_config(best)
    assert again.dataset.path == (project / "data").resolve()  # still finds the data
    assert again.storage_path == config.storage_path


@pytest.mark.parametrize(("low", "high"), [(1e-5, 1e-3), (2e-4, 8e-4), (3e-6, 4e-2)])
def test_trial_plot_log_axis_labels_do_not_overlap(low: float, high: float) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    lrs = np.geomspace(low, high, 8)
    trials = pd.DataFrame(
        {"member": ["a"] * 8 + ["b"] * 8, "val_dice": np.linspace(0.2, 0.9, 16),
         "config/lr": np.concatenate([lrs, lrs]),
         "config/dice_weight": [*np.linspace(0.1, 0.9, 8), *[np.nan] * 8]}
    )  # fmt: skip
    fig = trials_figure(trials)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in (fig.axes[1], fig.axes[3]):  # the log-x panels of both members
        boxes = [
            t.get_window_extent(renderer)
            for t in ax.get_xticklabels()
            if t.get_visible() and t.get_text()
            and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]
        ]  # fmt: skip
        assert len(boxes) >= 2
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes))
    plt.close(fig)
