"""`organseg models list`: every member with parameters and FLOPs, as a table or JSON."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from organseg.cli import app
from organseg.models import create_member, member_names
from organseg.models.summary import count_parameters

runner = CliRunner()


def _rows(*args: str) -> dict[str, dict]:
    result = runner.invoke(app, ["models", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.output)}


@pytest.fixture(scope="module")
def rows_512() -> dict[str, dict]:
    return _rows()


def test_lists_every_member_with_params_and_gflops(rows_512: dict[str, dict]) -> None:
    assert set(rows_512) == set(member_names())
    for row in rows_512.values():
        assert row["parameters"] > 0
        assert row["gflops"] > 0
        assert row["size"] == 512


def test_parameter_count_matches_the_built_model(rows_512: dict[str, dict]) -> None:
    row = rows_512["linknet34"]
    with torch.device("meta"):
        model = create_member("linknet34", row["in_channels"], row["classes"])
    assert row["parameters"] == count_parameters(model)
    assert row["parameters"] == pytest.approx(21.8e6, rel=0.01)  # ResNet-34 LinkNet


def test_discriminator_flops_match_the_convolution_arithmetic(rows_512: dict[str, dict]) -> None:
    row = rows_512["patch_discriminator"]
    ch, size, flops = row["in_channels"], 512, 0
    for out_ch, stride in [(64, 2), (128, 2), (256, 2), (512, 1), (1, 1)]:
        size = (size + 2 - 4) // stride + 1
        flops += 2 * ch * out_ch * 16 * size * size  # 2 FLOPs per multiply-add of a 4×4 conv
        ch = out_ch
    assert row["gflops"] == pytest.approx(flops / 1e9, rel=1e-9)


def test_segmenter_flops_scale_with_pixel_count(rows_512: dict[str, dict]) -> None:
    rows_64 = _rows("--size", "64")
    for name, row in rows_512.items():
        if row["kind"] == "segmenter" and row["dims"] == 2:  # fully convolutional: FLOPs ∝ H·W
            # (up to the size-independent fully connected layers of squeeze-excitation blocks)
            assert row["gflops"] == pytest.approx(64 * rows_64[name]["gflops"], rel=5e-3), name


def test_table_output_names_every_member() -> None:
    result = runner.invoke(app, ["models", "list", "--size", "64"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "GFLOPs" in result.output
    for name in member_names():
        assert name in result.output


def test_size_must_be_a_multiple_of_32() -> None:
    result = runner.invoke(app, ["models", "list", "--size", "100"])
    assert result.exit_code != 0
    assert "multiple of 32" in str(result.exception)


def _render(width: int, *, terminal: bool) -> str:
    import io

    from rich.console import Console

    from organseg.cli.models import print_members
    from organseg.models.summary import summarize_members

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=terminal, color_system=None)
    print_members(summarize_members(size=512, classes=4), 512, console)
    return buffer.getvalue()


@pytest.mark.parametrize("width", [80, 60, 30])
def test_a_narrow_terminal_gets_a_layout_that_fits_and_never_cuts_a_cell(width: int) -> None:
    out = _render(width, terminal=True)
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in out
    words = set(out.split())
    for name in member_names():
        assert name in words, name  # whole, as one word
    if width == 80:  # still a table: the GFLOPs column survives, one member per row
        assert "GFLOPs" in words
        row = next(line for line in lines if line.split()[:1] == ["patch_discriminator"])
        assert "disc" in row.split()


def test_piped_output_is_one_whole_record_per_line(rows_512: dict[str, dict]) -> None:
    result = runner.invoke(app, ["models", "list"], env={"COLUMNS": "80"})  # not a terminal
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    records = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert set(records) == set(member_names())
    for name, line in records.items():
        row = rows_512[name]
        fields = line.split()
        assert f"{row['parameters'] / 1e6:.2f}M" in fields
        assert f"{row['gflops']:.1f}" in fields
        assert line.endswith(row["description"])  # the description whole, last
    assert result.output.splitlines()[1].split()[:2] == ["member", "kind"]
