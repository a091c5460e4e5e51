"""A small synthetic dataset written once per test run and shared by the synth tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.synth import write_dataset

SIZE = 64
SEED = 7


@pytest.fixture(scope="session")
def synth_size() -> int:
    return SIZE


@pytest.fixture(scope="session")
def synth_seed() -> int:
    return SEED


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 CT + 2 MR cases at 64² with the default slice counts (16 CT, 12 MR)."""
    out = tmp_path_factory.mktemp("synth") / "dataset"
    return write_dataset(out, ct=2, mr=2, size=SIZE, seed=SEED)
