"""CI's last word on a JUnit report: fail a green run that tested nothing or that skipped anything.

CI sets the ``ORGANSEG_REQUIRE_*`` variables and installs what they need (the real CHAOS case, Orthanc, the
KubeRay CRDs), so every test must run there; a skip (a lost variable, a missing service) fails CI and is
listed by name with its reason. ``python scripts/ci_guard.py REPORT.xml``; exit 0 when it passes.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def verdict(report: Path) -> tuple[bool, list[str]]:
    """Whether the run passes the guard, and the lines that say why."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    cases = [case for suite in suites for case in suite.iter("testcase")]
    skipped = [case for case in cases if case.find("skipped") is not None]
    ran = len(cases) - len(skipped)
    lines = [f"CI: {ran} tests ran, {len(skipped)} skipped"]
    if ran == 0:
        lines.append("CI: no test ran")
    if skipped:
        required = sorted(
            k for k, v in os.environ.items() if k.startswith("ORGANSEG_REQUIRE_") and v == "1"
        )
        lines.append(
            f"CI: no test may skip here (required: {', '.join(required) or 'none set'}); skipped:"
        )
        for case in skipped:
            reason = (case.find("skipped").get("message") or "").strip()
            lines.append(f"  {case.get('classname')}::{case.get('name')} ({reason})")
    return ran > 0 and not skipped, lines


def main(argv: list[str]) -> int:
    passed, lines = verdict(Path(argv[1]))
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
