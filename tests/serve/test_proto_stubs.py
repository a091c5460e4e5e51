"""The committed gRPC stubs match the .proto, and the servicer path named in Serve configs imports."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from organseg.serve.app import GRPC_SERVICER

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "platform" / "organseg" / "serve" / "proto"


def _gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_generated_from_the_proto() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def stub_copy(tmp_path: Path) -> Path:
    for name in _gen_proto().OUTPUTS:
        shutil.copy(STUBS / name, tmp_path / name)
    return tmp_path


def test_a_generator_version_stamp_alone_is_not_stale(stub_copy: Path) -> None:
    """A grpcio-tools release that only restamps the stubs cannot turn the check red."""
    grpc_stub = stub_copy / "segmentation_pb2_grpc.py"
    text = grpc_stub.read_text()
    assert "GRPC_GENERATED_VERSION = '" in text
    grpc_stub.write_text(text.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9"))
    pb2 = stub_copy / "segmentation_pb2.py"
    pb2.write_text(
        pb2.read_text().replace("# Protobuf Python Version: ", "# Protobuf Python Version: 9")
    )
    assert _gen_proto().stale_stubs(stub_copy) == []


def test_a_changed_message_or_service_is_stale(stub_copy: Path) -> None:
    grpc_stub = stub_copy / "segmentation_pb2_grpc.py"
    grpc_stub.write_text(grpc_stub.read_text().replace("/organseg.v1.Segmentation/Health", "/x/Y"))
    pyi = stub_copy / "segmentation_pb2.pyi"
    pyi.write_text(pyi.read_text().replace("class SegmentRequest", "class SegmentRequestV2"))
    assert _gen_proto().stale_stubs(stub_copy) == [
        "segmentation_pb2.pyi",
        "segmentation_pb2_grpc.py",
    ]


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
