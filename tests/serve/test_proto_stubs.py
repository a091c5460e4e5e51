"""The committed gRPC stubs match the .proto, and the servicer path named in Serve configs imports."""

import subprocess
import sys
from pathlib import Path

from organseg.serve.app import GRPC_SERVICER

ROOT = Path(__file__).resolve().parents[2]


def test_stubs_are_generated_from_the_proto() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_servicer_function_imports_and_rpc_names_match_the_router() -> None:
    import importlib

    from organseg.serve.proto import segmentation_pb2
    from organseg.serve.router import Router

    module, name = GRPC_SERVICER.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
    rpcs = [m.name for m in segmentation_pb2.DESCRIPTOR.services_by_name["Segmentation"].methods]
    assert rpcs == ["Segment", "ListModels", "Health"]
    for rpc in rpcs:  # Serve dispatches gRPC calls to the ingress method of the same name
        assert callable(getattr(Router.func_or_class, rpc))
