"""requirements/lock.txt agrees with pyproject.toml: every declared package is pinned, hashed, in range."""

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
#: Pinned by the Makefile's TORCH_SPEC instead (their build differs by machine: CPU or a CUDA index).
OUTSIDE_THE_LOCK = {"torch", "torchvision"}


def locked() -> dict[str, tuple[str, list[str]]]:
    """Package → (pinned version, its hashes), read from the lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        head = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)", block)
        if head:
            name = canonicalize_name(head.group(1).split("[")[0])
            pins[name] = (head.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    return [Requirement(text) for text in texts]


def test_every_declared_package_is_pinned_with_hashes_within_its_range() -> None:
    pins = locked()
    problems = []
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name in OUTSIDE_THE_LOCK:
            assert name not in pins, f"{name} is pinned by TORCH_SPEC, not the lock"
            continue
        if name not in pins:
            problems.append(f"{requirement} is not in the lock (run make lock)")
            continue
        version, hashes = pins[name]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: the lock pins {version} (run make lock)")
        if not hashes:
            problems.append(f"{name}=={version} has no hash")
    assert not problems, "\n".join(problems)


def test_every_locked_package_has_hashes() -> None:
    pins = locked()
    assert len(pins) > 50
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []
