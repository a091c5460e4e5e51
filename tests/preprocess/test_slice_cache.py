"""Slice cache, slice dataset and patient-level splits over a small synthetic CHAOS dataset."""

import multiprocessing
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from organseg.errors import ConfigError, DataError
from organseg.io import CaseRef, Modality, discover_cases, load_case
from organseg.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    SliceAugmenter,
    SliceCache,
    SliceDataset,
    patient_split,
    prepare_volume,
    resize_slices,
)

ORGANS = ["liver", "right_kidney", "left_kidney", "spleen"]
CFG = PreprocessConfig(size=32)


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.npy")} | {
        "index.json": (root / "index.json").stat().st_mtime_ns
    }


@pytest.fixture(scope="module")
def refs(synth_root: Path) -> list[CaseRef]:
    return discover_cases(synth_root)


@pytest.fixture(scope="module")
def cache(refs: list[CaseRef], tmp_path_factory: pytest.TempPathFactory) -> SliceCache:
    return SliceCache.build(refs, tmp_path_factory.mktemp("cache"), CFG, ORGANS)


def test_samples_stack_t1_per_patient(cache: SliceCache) -> None:
    ids = [s.id for s in cache.samples]
    assert ids == ["CT/1", "CT/2", "MR/1/T1DUAL", "MR/1/T2SPIR", "MR/2/T1DUAL", "MR/2/T2SPIR"]
    t1 = cache.sample("MR/1/T1DUAL")
    assert t1.channels == 2
    assert t1.patient == "MR/1"
    assert t1.modality is Modality.MR_T1_IN
    assert t1.modalities == (Modality.MR_T1_IN, Modality.MR_T1_OUT)
    assert t1.case_ids == ("MR/1/T1DUAL-in", "MR/1/T1DUAL-out")
    assert cache.sample("CT/1").channels == 1
    image, labels = cache.volume("MR/1/T1DUAL")
    assert image.shape == (t1.n_slices, 2, 32, 32)
    assert image.dtype == np.float16
    assert labels.shape == (t1.n_slices, 32, 32)
    assert labels.dtype == np.uint8
    assert isinstance(image, np.memmap)
    # Sample records split like CaseRefs: the stacked T1 and T2 of one patient stay together.
    train, val = patient_split(cache.samples, val_fraction=0.25, seed=0)
    patients = {cache.sample(i).patient for i in val}
    assert len(patients) == 1
    assert all(cache.sample(i).patient not in patients for i in train)


def test_cached_slices_match_the_pipeline(cache: SliceCache, refs: list[CaseRef]) -> None:
    by_id = {r.case_id: r for r in refs}
    for sample in cache.samples:
        case = load_case(by_id[sample.case_ids[0]])
        partner = load_case(by_id[sample.case_ids[1]]).image if len(sample.case_ids) > 1 else None
        expected = prepare_volume(case.image, CFG, partner=partner)
        image, labels = cache.volume(sample.id)
        np.testing.assert_array_equal(image, expected.array.astype(np.float16))
        np.testing.assert_array_equal(labels, resize_slices(case.label.array, 32, order=0))
        assert sample.shape == case.image.shape
        assert sample.geometry == case.image.geometry
        assert sample.labelled_slices == tuple(np.flatnonzero(labels.any(axis=(1, 2))))


def test_second_build_rewrites_nothing(refs: list[CaseRef], tmp_path: Path) -> None:
    first = SliceCache.build(refs, tmp_path, CFG, ["liver"])
    assert len(first.built) == len(first.samples) == 6
    before = _files(tmp_path)
    second = SliceCache.build(refs, tmp_path, CFG, ["liver"])
    assert second.built == []
    assert _files(tmp_path) == before
    assert [s.id for s in SliceCache.open(tmp_path).samples] == [s.id for s in first.samples]
    # Only liver was kept: the other organs' pixels are background in this cache.
    _, labels = second.volume("MR/1/T2SPIR")
    assert set(np.unique(labels)) == {0, 1}


def test_changed_config_rebuilds_everything(refs: list[CaseRef], tmp_path: Path) -> None:
    ct = refs[:2]
    SliceCache.build(ct, tmp_path, CFG, ["liver"])
    bigger = SliceCache.build(ct, tmp_path, CFG.model_copy(update={"size": 64}), ["liver"])
    assert bigger.built == ["CT/1", "CT/2"]
    assert bigger.cfg.size == 64
    assert bigger.volume("CT/1")[0].shape[-2:] == (64, 64)
    assert SliceCache.open(tmp_path).cfg.size == 64


def test_changed_source_rebuilds_that_sample(synth_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data" / "Train_Sets" / "CT"
    shutil.copytree(synth_root / "Train_Sets" / "CT", data)
    refs = discover_cases(data)
    cache_dir = tmp_path / "cache"
    SliceCache.build(refs, cache_dir, CFG, ["liver"])
    mask = sorted((data / "2" / "Ground").iterdir())[0]
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    again = SliceCache.build(refs, cache_dir, CFG, ["liver"])
    assert again.built == ["CT/2"]


def _build_in_subprocess(args: tuple[Path, Path]) -> list[str]:
    root, cache_dir = args
    return SliceCache.build(discover_cases(root), cache_dir, CFG, ["liver"]).built


def test_concurrent_builders_build_each_sample_once(synth_root: Path, tmp_path: Path) -> None:
    # Forked after this process used torch and SimpleITK: organseg makes forked children safe.
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:  # leaving the block terminates the workers, even after a timeout
        results = pool.map_async(_build_in_subprocess, [(synth_root, tmp_path)] * 2).get(
            timeout=120
        )
    built = [sample_id for result in results for sample_id in result]
    assert sorted(built) == sorted(s.id for s in SliceCache.open(tmp_path).samples)
    assert not list(tmp_path.rglob("*.tmp"))


def test_separate_t1_and_missing_partner(refs: list[CaseRef], tmp_path: Path) -> None:
    mr1 = [r for r in refs if r.patient == "MR/1"]
    separate = SliceCache.build(
        mr1, tmp_path, CFG.model_copy(update={"t1_mode": "separate"}), ORGANS
    )
    assert [(s.id, s.channels) for s in separate.samples] == [
        ("MR/1/T1DUAL-in", 1), ("MR/1/T1DUAL-out", 1), ("MR/1/T2SPIR", 1),
    ]  # fmt: skip
    lonely = [r for r in mr1 if r.modality is not Modality.MR_T1_OUT]
    with pytest.raises(DataError, match="no out-phase"):
        SliceCache.build(lonely, tmp_path / "other", CFG, ORGANS)
    unlabelled = CaseRef("Test/CT/9", "Test/CT/9", Modality.CT, refs[0].image_dir, None, "test")
    with pytest.raises(DataError, match="no ground-truth masks"):
        SliceCache.build([refs[0], unlabelled], tmp_path / "third", CFG, ["liver"])
    # The sample built before the failure was recorded and is reused.
    assert SliceCache.build([refs[0]], tmp_path / "third", CFG, ["liver"]).built == []


def test_dataset_items_and_one_hot_targets(cache: SliceCache) -> None:
    ids = ["MR/1/T2SPIR", "CT/2"]
    organs = ["spleen", "liver"]
    dataset = SliceDataset(cache, ids, organs)
    assert len(dataset) == sum(cache.sample(i).n_slices for i in ids)
    _, labels = cache.volume("MR/1/T2SPIR")
    z = cache.sample("MR/1/T2SPIR").labelled_slices[
        len(cache.sample("MR/1/T2SPIR").labelled_slices) // 2
    ]
    image, target = dataset[z]
    assert dataset.item_source(z) == ("MR/1/T2SPIR", z)
    assert image.dtype == torch.float32
    assert image.shape == (1, 32, 32)
    assert target.dtype == torch.float32
    assert target.shape == (2, 32, 32)
    np.testing.assert_array_equal(target[0].numpy(), labels[z] == 4)  # spleen first, as asked
    np.testing.assert_array_equal(target[1].numpy(), labels[z] == 1)
    assert target.any()
    labelled = SliceDataset(cache, ids, organs, only_labelled_slices=True)
    expected = 0
    for sample_id in ids:
        sample_labels = cache.volume(sample_id)[1]
        expected += int(np.isin(sample_labels, [1, 4]).any(axis=(1, 2)).sum())
    assert len(labelled) == expected < len(dataset)
    spleen = SliceDataset(cache, ["MR/1/T2SPIR"], ["spleen"], only_labelled_slices=True)
    spleen_slices = [spleen.item_source(i)[1] for i in range(len(spleen))]
    assert spleen_slices == [z for z in range(len(labels)) if (labels[z] == 4).any()]
    three = SliceDataset(cache, ["MR/2/T1DUAL"], organs, in_channels=3)
    assert three[0][0].shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="kidney"):
        SliceDataset(SliceCache.open(cache.root), ids, ["kidney"])


def test_dataset_augmentation_is_seeded_per_epoch(cache: SliceCache) -> None:
    augment = SliceAugmenter(AugmentConfig(affine_p=1.0))
    dataset = SliceDataset(cache, ["CT/1"], ["liver"], augment=augment, seed=3)
    twin = SliceDataset(cache, ["CT/1"], ["liver"], augment=augment, seed=3)
    index = cache.sample("CT/1").labelled_slices[0]
    a = dataset[index]
    assert all(torch.equal(x, y) for x, y in zip(a, twin[index], strict=True))
    dataset.set_epoch(1)
    assert not torch.equal(dataset[index][0], a[0])
    dataset.set_epoch(0)
    assert torch.equal(dataset[index][0], a[0])


def test_dataset_pickles_without_memmaps_and_loads_in_workers(cache: SliceCache) -> None:
    dataset = SliceDataset(cache, ["CT/1", "MR/1/T2SPIR"], ["liver"])
    dataset[0]  # opens memory maps in this process
    blob = pickle.dumps(dataset)
    assert len(blob) < 50_000  # indices and records, not pixels
    clone = pickle.loads(blob)
    assert torch.equal(clone[5][0], dataset[5][0])
    loader = DataLoader(dataset, batch_size=8, num_workers=2, shuffle=False)
    images = torch.cat([x for x, _ in loader])
    assert images.shape == (len(dataset), 1, 32, 32)
    assert torch.equal(images[7], dataset[7][0])
