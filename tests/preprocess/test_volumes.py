"""Volume cache and patch sampler of the 3D members: resampling, cropping, oversampling, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from organseg.preprocess.augment3d import Augment3D
from organseg.preprocess.volume_config import VolumeConfig
from organseg.preprocess.volumes import (
    PatchDataset,
    VolumeCache,
    crop,
    from_member_grid,
    member_shape,
    to_member_grid,
)
from organseg.train.data import prepare_data
from tests.conftest import tiny_experiment


def test_member_grid_keeps_the_field_of_view() -> None:
    assert member_shape((12, 64, 64), (6.0, 6.0, 2.0), (3.0, 3.0, 4.0)) == (6, 128, 128)
    image = np.random.default_rng(0).random((12, 1, 64, 64)).astype(np.float16)
    on_member = to_member_grid(image, (6.0, 6.0, 2.0), (3.0, 3.0, 4.0))
    assert on_member.shape == (1, 6, 128, 128)
    back = from_member_grid(on_member, (12, 64, 64))
    assert back.shape == (12, 1, 64, 64)
    assert float(back.mean()) == pytest.approx(float(image.astype(np.float32).mean()), abs=0.01)
    labels = np.zeros((12, 64, 64), np.uint8)
    labels[4:8, 10:30, 20:40] = 1
    resampled = to_member_grid(labels, (6.0, 6.0, 2.0), (3.0, 3.0, 4.0), is_label=True)
    assert resampled.dtype == torch.uint8
    # volume in mm³ is preserved by nearest-neighbour resampling up to one voxel layer
    assert int(resampled.sum()) * 36 == pytest.approx(int(labels.sum()) * 72, rel=0.15)


def test_crop_pads_outside_the_volume() -> None:
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(1, 4, 5, 6)
    patch = crop(volume, (-2, 1, 3), (4, 4, 4))
    assert patch.shape == (1, 4, 4, 4)
    assert (patch[:, :2] == 0).all()
    np.testing.assert_array_equal(patch[0, 2:, :, :3], volume[0, :2, 1:5, 3:6])
    assert (patch[:, :, :, 3:] == 0).all()


@pytest.fixture(scope="module")
def volume_cache(tmp_path_factory: pytest.TempPathFactory):
    config = tiny_experiment(tmp_path_factory.mktemp("vol"), "vol")
    data = prepare_data(config)
    ids = [s.id for s in data.cache.samples if s.modality.value == "CT"]
    return data.cache, ids


def test_volume_cache_builds_once_and_samples_foreground(volume_cache) -> None:
    cache, ids = volume_cache
    volumes = VolumeCache.build(cache, ids, (4.0, 4.0, 4.0))
    again = VolumeCache.build(cache, ids, (4.0, 4.0, 4.0))
    assert again.root == volumes.root
    image, labels, foreground = volumes.volume(ids[0])
    assert isinstance(image, np.memmap)
    assert image.shape[1:] == labels.shape
    assert len(foreground)
    assert (labels[tuple(foreground.T)] > 0).all()
    cached = volumes.root / "images" / f"{volumes.index['samples'][ids[0]]['file']}.npy"
    stamp = cached.stat().st_mtime_ns
    VolumeCache.build(cache, ids, (4.0, 4.0, 4.0))
    assert cached.stat().st_mtime_ns == stamp  # resampled once, reused afterwards

    def organ_share(fraction: float) -> float:
        cfg = VolumeConfig(spacing=(4.0, 4.0, 4.0), patch=(8, 16, 16), foreground_fraction=fraction,
                           patches_per_volume=24, augment=[])  # fmt: skip
        dataset = PatchDataset(volumes, ids, ["liver"], cfg, in_channels=1, seed=1)
        hits = [float(dataset[i][1].max()) for i in range(len(dataset))]
        x, y = dataset[0]
        assert x.shape == (1, 8, 16, 16)
        assert y.shape == (1, 8, 16, 16)
        return float(np.mean(hits))

    assert organ_share(1.0) == 1.0  # every oversampled patch shows the organ
    assert organ_share(1.0) >= organ_share(0.0)


def test_augment3d_is_seeded_and_keeps_labels_integral() -> None:
    augment = Augment3D(["flip", "transpose", "intensity_shift", "rotate", "scale", "translate"])
    image = torch.rand(1, 8, 16, 16)
    labels = (torch.rand(8, 16, 16) > 0.7).to(torch.uint8)
    a_image, a_labels = augment(image, labels, 5)
    b_image, b_labels = augment(image, labels, 5)
    assert type(a_image) is torch.Tensor
    assert torch.equal(a_image, b_image)
    assert torch.equal(a_labels, b_labels)
    assert set(torch.unique(a_labels).tolist()) <= {0, 1}
    assert a_image.shape == image.shape
