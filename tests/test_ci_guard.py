"""CI's guard over the JUnit report: a skip or an empty run fails it, naming what skipped."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _guard():
    spec = importlib.util.spec_from_file_location("ci_guard", ROOT / "scripts" / "ci_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(tmp_path: Path, cases: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


PASSED = '<testcase classname="tests.io.test_a" name="test_ok" time="0.1"/>'
SKIPPED = (
    '<testcase classname="tests.pacs.test_orthanc_node" name="test_seg_back" time="0">'
    '<skipped type="pytest.skip" message="Orthanc not found"/></testcase>'
)


def test_a_run_where_everything_ran_passes(tmp_path: Path) -> None:
    passed, lines = _guard().verdict(_report(tmp_path, PASSED * 3))
    assert passed
    assert lines == ["CI: 3 tests ran, 0 skipped"]


def test_a_skipped_test_fails_ci_and_is_named_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORGANSEG_REQUIRE_ORTHANC", "1")
    passed, lines = _guard().verdict(_report(tmp_path, PASSED + SKIPPED))
    assert not passed
    assert "ORGANSEG_REQUIRE_ORTHANC" in lines[1]
    assert lines[2] == "  tests.pacs.test_orthanc_node::test_seg_back (Orthanc not found)"


def test_a_run_that_tested_nothing_fails(tmp_path: Path) -> None:
    passed, lines = _guard().verdict(_report(tmp_path, ""))
    assert not passed
    assert "CI: no test ran" in lines
