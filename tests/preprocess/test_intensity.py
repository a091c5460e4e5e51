"""Config validation and intensity normalization."""

import numpy as np
import pytest
from pydantic import ValidationError

from organseg.errors import DataError
from organseg.io import Modality, Volume
from organseg.preprocess import PreprocessConfig, ct_window, mr_normalize, normalize


def test_config_defaults_and_fingerprint() -> None:
    cfg = PreprocessConfig()
    assert (cfg.size, cfg.ct_window, cfg.t1_mode) == (256, (-160.0, 240.0), "stack")
    assert cfg.fingerprint() == PreprocessConfig().fingerprint()
    assert cfg.fingerprint() != PreprocessConfig(size=128).fingerprint()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sizes": 128}, "sizes"),
        ({"size": 100}, "divisible by 32"),
        ({"size": 0}, "at least 32"),
        ({"ct_window": (240, -160)}, "lo < hi"),
        ({"mr_percentiles": (99.0, 1.0)}, "mr_percentiles"),
        ({"mr_norm": "robust"}, "mr_norm"),
    ],
)
def test_config_errors_name_the_problem(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        PreprocessConfig(**kwargs)


def test_ct_window_endpoints_and_midpoint() -> None:
    hu = np.array([-1000, -160, 40, 240, 3000, -60], dtype=np.int16)
    out = ct_window(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0, 0.25], atol=1e-7)
    np.testing.assert_allclose(ct_window(np.array([0.0, 100.0]), lo=0, hi=100), [0.0, 1.0])
    with pytest.raises(ValueError, match="lo < hi"):
        ct_window(hu, lo=10, hi=10)


def test_mr_zscore_is_robust_to_outliers() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(300.0, 50.0, size=(8, 64, 64)).astype(np.float32)
    spiked = clean.copy()
    spiked.flat[rng.choice(spiked.size, 10, replace=False)] = 1e6  # a few hot pixels
    a, b = mr_normalize(clean), mr_normalize(spiked)
    assert a.dtype == np.float32
    assert abs(float(b.mean())) < 0.05
    assert abs(float(b.std()) - 1.0) < 0.05
    assert float(b.max()) < 4.0  # the spikes were clipped to the 99.5th percentile
    np.testing.assert_allclose(np.median(a), np.median(b), atol=0.02)


def test_mr_minmax_and_constant_volume() -> None:
    ramp = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    out = mr_normalize(ramp, (0.0, 100.0), method="minmax")
    assert out.min() == 0.0
    assert out.max() == 1.0
    clipped = mr_normalize(ramp, (10.0, 90.0), method="minmax")
    assert np.count_nonzero(clipped == 0.0) > 90
    assert np.count_nonzero(clipped == 1.0) > 90
    assert not mr_normalize(np.full((2, 4, 4), 7.0)).any()
    with pytest.raises(ValueError, match="unknown MR normalization"):
        mr_normalize(ramp, method="max")  # type: ignore[arg-type]


def test_normalize_dispatches_on_modality() -> None:
    array = np.linspace(-500, 500, 2 * 8 * 8).reshape(2, 8, 8)
    cfg = PreprocessConfig(mr_norm="minmax")
    ct = normalize(Volume(array, modality=Modality.CT), cfg)
    np.testing.assert_array_equal(ct, ct_window(array))
    mr = normalize(Volume(array, modality=Modality.MR_T2SPIR), cfg)
    np.testing.assert_array_equal(mr, mr_normalize(array, cfg.mr_percentiles, "minmax"))
    with pytest.raises(DataError, match="set the modality"):
        normalize(Volume(array, meta={"source": "scan.nii.gz"}), cfg)
