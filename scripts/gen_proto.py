"""Regenerate the Python gRPC stubs from ``platform/organseg/serve/proto/segmentation.proto``.

Run after editing the .proto: ``python scripts/gen_proto.py`` (needs grpcio-tools, in the dev extra).
``--check`` exits 1 when the committed stubs are stale (the test suite runs it). It compares what the .proto
generates (messages, services, stubs) and ignores the generator's version stamps, so a new grpcio-tools
release on the package index cannot fail it; ``make lock`` regenerates the stubs when their content moves.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOT = ROOT / "platform"
PROTO = Path("organseg/serve/proto/segmentation.proto")
OUTPUTS = ("segmentation_pb2.py", "segmentation_pb2.pyi", "segmentation_pb2_grpc.py")


def generate(out_root: Path) -> None:
    """protoc with the package root as include path, so the stubs import ``organseg.serve.proto``."""
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(SOURCE_ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


#: Lines that record which generator (and minimum runtime) wrote a stub rather than what it generates.
_VERSION_STAMPS = re.compile(
    r"^(GRPC_GENERATED_VERSION = .*|# Protobuf Python Version: .*)$"
    r"|_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)",
    re.MULTILINE,
)


def generated_content(path: Path) -> str:
    """A stub's text without the generator's version stamps: what the .proto itself determines."""
    return _VERSION_STAMPS.sub("<version stamp>", path.read_text())


def stale_stubs(target: Path) -> list[str]:
    """The committed stubs in ``target`` whose generated content differs from a fresh protoc run."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PROTO.parent
        return [n for n in OUTPUTS if generated_content(fresh / n) != generated_content(target / n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare with the committed stubs"
    )
    options = parser.parse_args()
    target = SOURCE_ROOT / PROTO.parent
    if not options.check:
        generate(SOURCE_ROOT)
        print(f"wrote {', '.join(OUTPUTS)} in {target}")
        return 0
    stale = stale_stubs(target)
    if stale:
        print(f"stale gRPC stubs: {stale}; run python scripts/gen_proto.py", file=sys.stderr)
        return 1
    print("gRPC stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
