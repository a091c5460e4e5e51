"""Session-wide fixtures: the real CHAOS sample case and (lazily) one local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def chaos_sample_root() -> Path | None:
    """The real CHAOS CT case: ``$ORGANSEG_CHAOS_SAMPLE`` or ``../shared/chaos-sample`` beside the repo."""
    env = os.environ.get("ORGANSEG_CHAOS_SAMPLE")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "chaos-sample")
    for path in candidates:
        if (path / "Train_Sets" / "CT").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def chaos_sample() -> Path:
    """Root of the real CHAOS sample; skips where absent unless ``ORGANSEG_REQUIRE_SAMPLE=1`` (CI)."""
    root = chaos_sample_root()
    if root is None:
        message = (
            "real CHAOS sample not found: set ORGANSEG_CHAOS_SAMPLE to a folder holding "
            "Train_Sets/CT (e.g. the organizers' Data_3D sample)"
        )
        if os.environ.get("ORGANSEG_REQUIRE_SAMPLE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def chaos_ct_case(chaos_sample: Path) -> Path:
    return chaos_sample / "Train_Sets" / "CT" / "1"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CHAOS dataset (2 CT + 2 MR, 64²) shared by the whole session. Read-only!"""
    from organseg.synth import write_dataset

    root = tmp_path_factory.mktemp("synth") / "chaos"
    write_dataset(root, ct=2, mr=2, size=64, slices=12, seed=7)
    return root
