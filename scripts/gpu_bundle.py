"""Pack Ray and the wheels a bare GPU machine lacks into ``.gpu-bundle/site.tar.xz`` for benchmarks/gpu_suite.sh.

The GPU machine has Python 3.12, torch with CUDA, torchvision, timm, numpy, grpcio 1.84 and protobuf,
but no network, no Ray and no segmentation-models-pytorch, and at most 64 MiB travel with a command. So
this downloads the cp312 manylinux wheels here, unpacks them into one folder (that folder goes first on
``PYTHONPATH`` there), drops what neither Serve nor training imports (Ray's Java jars, RLlib, the LLM
library, the dashboard's source maps; test folders) and compresses it with xz.

    python scripts/gpu_bundle.py                 # download, strip, pack; prints the size
    python scripts/gpu_bundle.py --dry-run       # print the plan and check the tools; no downloads
    python scripts/gpu_bundle.py --skip scipy    # leave out a wheel the machine already has

``grpcio-reflection`` is pinned to the machine's grpcio (1.84.0): another version makes ``from ray import
serve`` fail there. The bundle must stay under the 64 MiB a command can carry beside the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / ".gpu-bundle"
LIMIT_MB = 60  # of the 64 MiB that travel with a command, leave room for the repository itself
MACHINE_GRPCIO = "1.84.0"

# Ray and what Serve needs beyond the machine's packages (seen working there), then organseg's own needs.
WHEELS = [
    "ray==2.60.0",
    "starlette",
    "fastapi",
    "uvicorn",
    "pydantic>=2.6",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "opentelemetry-api",
    "importlib-metadata",
    f"grpcio-reflection=={MACHINE_GRPCIO}",
    # organseg
    "segmentation-models-pytorch>=0.4",
    "connected-components-3d>=3.18",
    "SimpleITK>=2.3",
    "scipy>=1.11",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "python-multipart",
    "rich",
    "pygments",
    "markdown-it-py",
    "mdurl",
    "pyyaml",
]
STRIP = [
    "ray/jars",
    "ray/rllib",
    "ray/llm",
    "ray/dashboard/client/build/static/js/*.map",
    "**/tests",
]


def _name(spec: str) -> str:
    return spec.split("=")[0].split(">")[0].split("<")[0].strip()


def plan(skip: set[str]) -> list[str]:
    """The wheels, pinned to the versions installed here (organseg is tested with them; pydantic and
    pydantic-core, for one, must match), except the pins that must follow the GPU machine."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for spec in WHEELS:
        name = _name(spec)
        if name.lower() in {s.lower() for s in skip}:
            continue
        if "==" not in spec:
            with contextlib.suppress(PackageNotFoundError):
                spec = f"{name}=={version(name)}"
        out.append(spec)
    return out


def download(wheels: list[str], into: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
        "--platform", "manylinux_2_28_x86_64", "--platform", "any", "-d", str(into), *wheels,
    ]  # fmt: skip
    subprocess.run(command, check=True)


def unpack(wheel_dir: Path, site: Path) -> None:
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for pattern in STRIP:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def pack(site: Path, target: Path) -> float:
    target.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(target, "wb", preset=9) as stream, tarfile.open(fileobj=stream, mode="w") as tar:
        for path in sorted(site.iterdir()):
            tar.add(path, arcname=path.name)
    return target.stat().st_size / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan; download nothing")
    parser.add_argument("--skip", default="", help="comma-separated wheels the GPU machine has")
    parser.add_argument("--out", type=Path, default=OUT / "site.tar.xz")
    options = parser.parse_args()
    wheels = plan({s for s in options.skip.split(",") if s})
    print(f"{len(wheels)} wheels for CPython 3.12 manylinux x86_64:", " ".join(wheels))
    print(f"stripped after unpacking: {', '.join(STRIP)}")
    print(f"bundle: {options.out} (must stay under {LIMIT_MB} MiB)")
    if options.dry_run:
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True
        )
        ok = pip.returncode == 0
        print(
            f"pip: {'found, ' + pip.stdout.split(' from ')[0] if ok else 'MISSING'}; dry run, nothing downloaded"
        )
        return 0 if ok else 1
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir, site = Path(tmp) / "wheels", Path(tmp) / "site"
        download(wheels, wheel_dir)
        unpack(wheel_dir, site)
        size = pack(site, options.out)
    print(f"wrote {options.out}: {size:.1f} MiB")
    if size > LIMIT_MB:
        print(
            f"too large to travel (limit {LIMIT_MB} MiB): pass --skip for wheels the machine has",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
