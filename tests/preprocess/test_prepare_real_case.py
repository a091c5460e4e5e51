"""The real CHAOS CT case through the one preprocessing path and back to its 512² grid."""

from pathlib import Path

import numpy as np
import pytest

from organseg.io import discover_cases, load_case
from organseg.preprocess import (
    PreprocessConfig,
    SliceCache,
    SliceDataset,
    ct_window,
    prepare_volume,
    resample_inplane,
    resize_slices,
)

pytestmark = pytest.mark.sample


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def case(chaos_ct_case: Path):
    (ref,) = discover_cases(chaos_ct_case)
    return load_case(ref)


def test_prepare_and_restore_real_ct(case) -> None:
    cfg = PreprocessConfig()
    prepared = prepare_volume(case.image, cfg)
    assert prepared.array.shape == (78, 1, 256, 256)
    assert prepared.array.dtype == np.float32
    assert prepared.array.min() == 0.0
    assert prepared.array.max() == 1.0
    assert 0.3 < float((prepared.array == 0.0).mean()) < 0.9  # air and fat below -160 HU
    assert prepared.shape == (78, 512, 512)
    assert prepared.geometry == case.image.geometry
    # Matches windowing then SimpleITK's linear resampling onto the same field of view.
    windowed = case.image.with_array(ct_window(case.image.array))
    reference = resample_inplane(windowed, 256)
    np.testing.assert_allclose(prepared.array[:, 0], reference.array, atol=1e-5)
    assert prepared.prepared_geometry.isclose(reference.geometry)

    liver = case.label.array == 1
    small = resize_slices(liver.astype(np.uint8), 256, order=0)
    labels = prepared.restore(small, is_label=True)
    assert labels.shape == (78, 512, 512)
    assert labels.dtype == np.uint8
    probs = prepared.restore(small[:, None].astype(np.float32))
    assert probs.shape == (78, 1, 512, 512)
    assert probs.dtype == np.float32
    assert _dice(labels > 0, liver) > 0.98
    assert _dice(probs[:, 0] >= 0.5, liver) > 0.98


def test_real_ct_slice_cache(case, chaos_ct_case: Path, tmp_path: Path) -> None:
    cfg = PreprocessConfig(size=128)
    cache = SliceCache.build(discover_cases(chaos_ct_case), tmp_path, cfg, ["liver"])
    (sample,) = cache.samples
    assert (sample.id, sample.n_slices, sample.channels) == ("CT/1", 78, 1)
    dataset = SliceDataset(cache, ["CT/1"], ["liver"], only_labelled_slices=True)
    assert len(dataset) == len(sample.labelled_slices) > 50
    index = len(dataset) // 2
    image, target = dataset[index]
    _, z = dataset.item_source(index)
    expected = prepare_volume(case.image, cfg).array[z].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(image.numpy(), expected)
    liver = resize_slices(case.label.array[z : z + 1], 128, order=0)[0] == 1
    np.testing.assert_array_equal(target[0].numpy(), liver)
    assert sample.organ_voxels["liver"] == int((case.label.array == 1).sum())
