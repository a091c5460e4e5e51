"""Where the benchmarks find the real CHAOS CT case (the test suite's fixture looks in the same places)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO_ROOT.parent / "shared" / "chaos-sample"


def find_sample() -> Path | None:
    """``$ORGANSEG_CHAOS_SAMPLE`` or ``../shared/chaos-sample`` beside the repository, if it holds the case."""
    env = os.environ.get("ORGANSEG_CHAOS_SAMPLE")
    candidates = [Path(env)] if env else []
    candidates.append(DEFAULT_SAMPLE)
    return next(
        (p for p in candidates if (p / "Train_Sets" / "CT" / "1" / "DICOM_anon").is_dir()), None
    )


def find_case() -> Path | None:
    """The CT case folder itself (``Train_Sets/CT/1``) of :func:`find_sample`."""
    sample = find_sample()
    return sample / "Train_Sets" / "CT" / "1" if sample else None
