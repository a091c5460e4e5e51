"""The synthetic nine-label abdominal CT: every structure present, reproducible, the CHAOS organs kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organseg.datasets import open_msd, open_nnunet
from organseg.synth import make_phantom
from organseg.synth.abdomen import ABDOMEN_LABELS, make_abdomen_phantom, write_abdomen_dataset


@pytest.mark.parametrize(("size", "slices", "seed"), [(32, 8, 0), (64, 16, 1), (96, 20, 5)])
def test_every_label_is_present(size: int, slices: int, seed: int) -> None:
    image, labels, spacing = make_abdomen_phantom(size, slices, seed)
    assert len(ABDOMEN_LABELS) >= 8
    counts = np.bincount(labels.ravel(), minlength=len(ABDOMEN_LABELS) + 1)
    assert labels.max() == len(ABDOMEN_LABELS)
    assert (counts[1:] > 0).all(), counts
    assert image.dtype == np.int16
    assert image.shape == labels.shape == (slices, size, size)
    # the added structures are only painted into free space (the gallbladder into the liver bed)
    chaos_image, chaos_labels, chaos_spacing = make_phantom(
        "CT", size=size, slices=slices, seed=seed
    )
    assert spacing == chaos_spacing
    kept = labels <= 4
    np.testing.assert_array_equal(labels[kept], chaos_labels[kept])
    np.testing.assert_array_equal(image[kept], chaos_image[kept])
    assert set(np.unique(chaos_labels[labels == 6])) <= {0, 1}


def test_same_seed_same_phantom() -> None:
    a = make_abdomen_phantom(32, 8, 3)
    b = make_abdomen_phantom(32, 8, 3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_written_as_nnunet_and_msd(tmp_path: Path) -> None:
    nnunet = open_nnunet(write_abdomen_dataset(tmp_path / "nn", cases=2, size=32, slices=8))
    msd = open_msd(
        write_abdomen_dataset(tmp_path / "msd", cases=2, size=32, slices=8, format="msd")
    )
    assert nnunet.check() == []
    assert msd.check() == []
    assert nnunet.label_set == msd.label_set
    assert nnunet.label_set is not None
    assert nnunet.label_set.names == ABDOMEN_LABELS
    for case in nnunet.cases:
        a, b = nnunet.load(case), msd.load(case.case_id)
        np.testing.assert_array_equal(a.image.array, b.image.array)
        np.testing.assert_array_equal(a.label.array, b.label.array)  # type: ignore[union-attr]
        assert len(np.unique(a.label.array)) == len(ABDOMEN_LABELS) + 1  # type: ignore[union-attr]
