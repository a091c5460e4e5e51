"""The configs meet real (synthetic) data: every member gets training and validation slices it can take.

No Ray here: this is the data preparation `organseg train` does before any member starts (synthetic
CHAOS dataset, slice cache, patient split), run on the quickstart as it is and on the all-organ CT+MR
task with its dataset swapped for a small synthetic one, which covers stacked T1 pairs and the
CT-only/MR-only split of organs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.config import ExperimentConfig, load_config
from organseg.io.volume import Modality
from organseg.train.data import prepare_data

ROOT = Path(__file__).resolve().parents[2]
SMALL_SYNTHETIC = {
    "synthetic": {"ct": 2, "mr": 2, "size": 64, "slices": 8, "seed": 3},
    "val_fraction": 0.5,
}


def _check_every_member_has_data(config: ExperimentConfig) -> None:
    data = prepare_data(config)
    samples = {s.id: s for s in data.cache.samples}
    for member in config.members:
        for split in ("train", "val"):
            ids = data.ids_for(member, split)
            seen = {samples[i].modality for i in ids}
            missing = [m.value for m in member.modalities or [] if m not in seen]
            assert not missing, f"{config.name}: {member.name} has no {split} samples of {missing}"
            for sample_id in ids:
                sample = samples[sample_id]
                stacked = (
                    sample.modality is Modality.MR_T1_IN and config.preprocess.t1_mode == "stack"
                )
                image, _ = data.cache.volume(sample_id)
                assert sample.channels == image.shape[1] == (2 if stacked else 1), sample_id
                assert image.shape[-2:] == (config.preprocess.size, config.preprocess.size)


def test_quickstart_members_see_ct_and_t2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # storage_path `runs` is relative to the working directory
    config = load_config(ROOT / "configs" / "quickstart.yaml")
    _check_every_member_has_data(config)


def test_all_organ_ct_mr_task_on_synthetic_data(tmp_path: Path) -> None:
    config = load_config(
        ROOT / "configs" / "task4-organs-ct-mr.yaml",
        overrides={
            "dataset": SMALL_SYNTHETIC,
            "preprocess.size": 64,
            "storage_path": str(tmp_path),
        },
    )
    assert config.preprocess.t1_mode == "stack"
    _check_every_member_has_data(config)


def test_nnunet_abdomen_config_on_a_synthetic_nnunet_dataset(tmp_path: Path) -> None:
    """The nnU-Net recipe with its dataset swapped for a small synthetic one (no splits_final.json, so
    no fold): every member, the five 3D folds included, gets the dataset's CT slices and learns its
    nine labels."""
    from organseg.synth.abdomen import ABDOMEN_LABELS, write_abdomen_dataset

    dataset = write_abdomen_dataset(tmp_path / "ds", cases=5, size=32, slices=8, seed=2)
    config = load_config(
        ROOT / "configs" / "nnunet-abdomen-ct.yaml",
        overrides={
            "dataset.path": str(dataset),
            "dataset.fold": None,
            "dataset.val_fraction": 0.2,
            "preprocess.size": 32,
            "storage_path": str(tmp_path),
        },
    )
    assert config.dataset.format == "nnunet"
    data = prepare_data(config)
    assert data.label_set is not None
    assert data.label_set.names == ABDOMEN_LABELS
    assert data.cache.organs == list(ABDOMEN_LABELS)
    _check_every_member_has_data(config)
    folds = data.assign_folds(config.member("unet3d-fullres"))
    assert len(folds) == 5
    for fold in folds:
        assert data.ids_for(fold, "train")
        assert data.ids_for(fold, "val")
