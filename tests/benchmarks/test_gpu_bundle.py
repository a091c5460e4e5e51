"""The GPU bundle cannot rot: what the suite imports is in it or on the GPU machine, at usable versions."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_bundle.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle():
    return _module()


@pytest.fixture(scope="module")
def found(bundle):
    """The suite's import closure, computed in a fresh interpreter (no network, nothing downloaded)."""
    return bundle.closure(optional=set(bundle.load_manifest()["optional"]))


@pytest.mark.slow  # a fresh interpreter imports torch, Ray Serve and MONAI: ~20 s
def test_bundle_and_machine_hold_everything_the_suite_imports(bundle, found) -> None:
    manifest = bundle.load_manifest()
    assert bundle.check(found, manifest) == []
    # the closure is real: the Serve graph, training and the synthetic writer pull these in
    assert {"ray", "monai", "pydicom", "simpleitk", "grpcio", "torch"} <= set(found["versions"])


@pytest.mark.slow  # a fresh interpreter imports torch, Ray Serve and MONAI: ~20 s
def test_check_names_what_is_missing_or_too_old(bundle, found) -> None:
    manifest = copy.deepcopy(bundle.load_manifest())
    del manifest["bundle"]["monai"]
    del manifest["bundle"]["grpcio"]  # the machine's grpcio is older than the committed stubs
    problems = bundle.check(found, manifest)
    assert any(p.startswith("monai ") and "neither in the bundle" in p for p in problems)
    assert any(p.startswith("grpcio>=") and "the GPU machine has 1.84.0" in p for p in problems)


@pytest.mark.slow  # a fresh interpreter imports torch, Ray Serve and MONAI: ~20 s
def test_optional_packages_are_absent_from_the_closure(bundle, found) -> None:
    optional = set(bundle.load_manifest()["optional"])
    assert not optional & set(found["versions"])


def test_machine_notes_parse_names_and_versions(bundle) -> None:
    notes = (
        "torch 2.11.0 (CUDA 13), grpcio 1.84.0, protobuf 7.36; Ray is **not** there.\n\n"
        "The machine's package names (everything not listed here must be bundled):\n\n"
        "grpcio, numpy, protobuf, torch, typing-extensions.\n"
    )
    parsed = bundle.parse_machine_notes(notes)
    assert parsed["names"] == ["grpcio", "numpy", "protobuf", "torch", "typing-extensions"]
    assert parsed["versions"] == {"torch": "2.11.0", "grpcio": "1.84.0", "protobuf": "7.36"}


def test_manifest_copy_of_the_machine_list_is_current(bundle) -> None:
    notes = REPO.parent / "shared" / "device-packages.md"
    if not notes.exists():
        pytest.skip("no ../shared/device-packages.md beside the repository")
    assert bundle.parse_machine_notes(notes.read_text()) == bundle.load_manifest()["machine"]


def test_last_build_fits_one_call(bundle) -> None:
    manifest = bundle.load_manifest()
    sizes = manifest["packed_mib"]
    assert set(sizes) == {"main", *manifest["parts"].values()}
    assert sum(sizes.values()) <= manifest["cap_mib"]  # every part in one call


def test_unpack_keeps_executables_executable(bundle, tmp_path: Path) -> None:
    """Ray starts gcs_server and raylet as programs: a bundle that loses their mode cannot start Ray."""
    import os
    import zipfile

    wheels, site = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "demo-1.0-py3-none-any.whl", "w") as archive:
        program = zipfile.ZipInfo("demo/bin/server")
        program.external_attr = 0o755 << 16
        archive.writestr(program, "#!/bin/sh\n")
        archive.writestr("demo/__init__.py", "")
    bundle.unpack(wheels, site)
    assert os.access(site / "demo" / "bin" / "server", os.X_OK)
    assert not os.access(site / "demo" / "__init__.py", os.X_OK)
