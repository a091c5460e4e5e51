"""The integer/cc3d assembly gives exactly what the float32 path gave (kept in benchmarks/ as the baseline)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from organseg.config import PostprocessConfig
from organseg.ensemble.postprocess import labels_from_member_maps

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if (
        str(BENCH) not in sys.path
    ):  # the benchmark imports its sibling modules, as when run directly
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


legacy = _load("_legacy_postprocess")
bench = _load("postprocess_bench")

CONFIGS = [
    PostprocessConfig(),
    PostprocessConfig(threshold=0.4, component_threshold=None, largest_component=True),
    PostprocessConfig(threshold=0.5, component_threshold=0.7, largest_component=False),
    PostprocessConfig(threshold=0.3, component_threshold=None, largest_component=False),
]


def _same(per_organ, organs, cfg, grid) -> None:
    old_labels, old_voxels, old_unc = legacy.assemble(per_organ, organs, cfg, grid)
    new = labels_from_member_maps(per_organ, organs, cfg, grid)
    assert new.labels.dtype == np.uint8
    assert new.labels.shape == old_labels.shape
    np.testing.assert_array_equal(new.labels, old_labels)
    assert new.voxels == old_voxels
    assert new.uncertainty == old_unc


@pytest.mark.parametrize("kind", ["realistic", "noisy"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_liver_maps_match_the_float_path(kind: str, cfg: PostprocessConfig) -> None:
    maps = bench.member_maps(slices=12, size=64, members=4, kind=kind, seed=3)
    per_organ = {"liver": [m[:, 0] for m in maps]}
    _same(per_organ, ["liver"], cfg, (64, 64))


@pytest.mark.parametrize("grid", [(96, 96), (80, 112), (48, 48)])
def test_restoring_to_another_grid_matches(grid: tuple[int, int]) -> None:
    maps = bench.member_maps(slices=10, size=64, members=3, kind="realistic", seed=5)
    _same({"liver": [m[:, 0] for m in maps]}, ["liver"], PostprocessConfig(), grid)


def _organ_maps(rng: np.random.Generator, shape, centres, members: int) -> list[np.ndarray]:
    zz, yy, xx = np.indices(shape)
    out = []
    for _ in range(members):
        p = np.zeros(shape, np.float32)
        for c in centres:  # overlapping soft blobs, so organs contest the voxels between them
            r2 = ((zz - c[0]) / 4) ** 2 + ((yy - c[1]) / 9) ** 2 + ((xx - c[2]) / 9) ** 2
            p = np.maximum(p, np.exp(-r2 / 2))
        p += rng.normal(0, 0.08, shape).astype(np.float32)
        out.append(np.round(np.clip(p, 0, 1) * 255).astype(np.uint8))
    return out


@pytest.mark.parametrize("grid", [None, (56, 72)])
@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=range(3))
def test_contested_voxels_and_uneven_member_counts_match(grid, cfg: PostprocessConfig) -> None:
    rng = np.random.default_rng(11)
    shape = (10, 40, 40)
    organs = ["liver", "right_kidney", "spleen", "left_kidney"]
    per_organ = {
        "liver": _organ_maps(rng, shape, [(5, 15, 15), (5, 30, 30)], 3),
        "right_kidney": _organ_maps(rng, shape, [(5, 20, 20)], 2),  # two members only
        "spleen": _organ_maps(rng, shape, [(5, 15, 22)], 1),
        "left_kidney": [],  # no member segments it
    }
    _same(per_organ, organs, cfg, grid or (40, 40))
    labels = labels_from_member_maps(per_organ, organs, cfg, grid).labels
    assert {1, 2, 4} <= set(np.unique(labels).tolist()) or cfg.component_threshold == 0.7


def test_equal_sized_components_keep_the_first_in_raster_order() -> None:
    maps = np.zeros((2, 6, 6), np.uint8)
    maps[0, 0, :2] = 255  # two 2-voxel components of the same size
    maps[1, 4, 4:] = 255
    cfg = PostprocessConfig(component_threshold=None)
    _same({"liver": [maps, maps]}, ["liver"], cfg, (6, 6))
    labels = labels_from_member_maps({"liver": [maps]}, ["liver"], cfg).labels
    assert labels[0, 0, :2].all()
    assert not labels[1].any()
