"""`organseg models show`: what a trained model directory serves, read from the directory alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from organseg.cli import app, main
from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.spec import ClassifierEntry, load_spec, save_spec
from organseg.ensemble.version import model_version
from tests.conftest import AMOS8_SHOWN, label_rows

runner = CliRunner()


def _show(model_dir: Path, *extra: str) -> str:
    result = runner.invoke(app, ["models", "show", str(model_dir), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_model_without_classifier(liver_everywhere_model: Path) -> None:
    shown = json.loads(_show(liver_everywhere_model, "--json"))
    assert shown["model_version"] == model_version(liver_everywhere_model).id
    assert shown["ensembles"] == [{"modality": "CT", "members": ["attn"], "organs": ["liver"]}]
    assert shown["members"][0] | {"val_dice": None} == {
        "name": "attn",
        "arch": "attention_unet",
        "kind": "2d",
        "in_channels": 1,
        "organs": ["liver"],
        "modalities": ["CT"],
        "val_dice": None,
        "epoch": None,
        "folds": None,
    }
    assert shown["input"] == {"size": 64, "t1_mode": "stack", "t2_channel": False}
    assert shown["modality_classifier"] is None
    table = " ".join(_show(liver_everywhere_model).split())
    assert "liver-everywhere" in table
    assert "modality classifier: none" in table
    # how T1 series are stacked does not matter to a CT-only model (the creation time, e.g.
    # 2026-12-07T11:04, may hold "T1" between 10:00 and 19:59)
    assert "T1" not in table.replace(load_spec(liver_everywhere_model).created, "")


def test_an_unvalidated_classifier_is_reported_unused_with_the_reason(
    liver_everywhere_model: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(liver_everywhere_model, model_dir)
    rng = np.random.default_rng(0)
    kinds = ["CT", "MR-T1-in", "MR-T1-out", "MR-T2SPIR"] * 3
    features = rng.normal(size=(len(kinds), 5)) + np.repeat(np.eye(4, 5) * 4, 3, axis=0)
    path = ModalityClassifier.fit(features, kinds).save(model_dir)  # fitted, never cross-validated
    spec = load_spec(model_dir)
    save_spec(
        spec.model_copy(update={"modality_classifier": ClassifierEntry(file=path.name)}), model_dir
    )
    shown = json.loads(_show(model_dir, "--json"))["modality_classifier"]
    assert shown["used"] is False
    assert "not validated" in shown["why_not"]
    assert shown["min_confidence"] == 0.9
    # the classifier is part of the version answers carry
    assert (
        json.loads(_show(model_dir, "--json"))["model_version"]
        != model_version(liver_everywhere_model).id
    )
    assert "not used under the default gate" in " ".join(_show(model_dir).split())


def test_not_a_model_directory_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "show", str(tmp_path)])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not a model directory" in err
    assert "Traceback" not in err


@pytest.mark.ray
@pytest.mark.slow
def test_a_trained_ensemble_with_its_validated_classifier(trained_ensemble) -> None:
    _config, report = trained_ensemble
    shown = json.loads(_show(report.model_dir, "--json"))
    spec = load_spec(report.model_dir)
    assert [m["name"] for m in shown["members"]] == ["dualtail", "attn"]
    assert [m["val_dice"] for m in shown["members"]] == [m.val_dice for m in spec.members]
    assert {e["modality"] for e in shown["ensembles"]} == {"CT", "MR-T2SPIR"}
    classifier = shown["modality_classifier"]
    assert classifier["used"] is True, classifier["why_not"]
    assert classifier["held_out_series"] == dict.fromkeys(
        ["CT", "MR-T1-in", "MR-T1-out", "MR-T2SPIR"], 4
    )
    assert classifier["folds"] == 5
    table = " ".join(_show(report.model_dir).split())
    assert "routes headerless volumes at confidence ≥ 0.9" in table
    assert "out-of-fold held-out accuracy 1.00 on 16 series" in table


def test_a_model_lists_its_recorded_label_set_with_values_and_codes(amos8_model: Path) -> None:
    shown = json.loads(_show(amos8_model, "--json"))
    label_set = shown["label_set"]
    assert (label_set["name"], label_set["ignore"]) == ("amos-8", None)
    assert label_rows(label_set) == AMOS8_SHOWN
    assert len({tuple(lb["colour"]) for lb in label_set["labels"]}) == 8
    assert shown["organs"] == [name for name, *_ in AMOS8_SHOWN]
    assert shown["members"][0]["organs"] == shown["organs"]  # one output channel per label
    table = " ".join(_show(amos8_model).split())
    assert "(label set amos-8)" in table
    assert "CHAOS" not in table
    assert "6 liver" in table


def test_a_chaos_model_lists_the_chaos_labels(liver_everywhere_model: Path) -> None:
    shown = json.loads(_show(liver_everywhere_model, "--json"))
    assert shown["label_set"] == {
        "name": "chaos",
        "ignore": None,
        "labels": [
            {
                "name": "liver",
                "value": 1,
                "colour": [255, 255, 0],
                "code": {"value": "10200004", "scheme": "SCT", "meaning": "Liver"},
                "laterality": None,
                "largest_component": True,
                "category": {
                    "value": "91723000",
                    "scheme": "SCT",
                    "meaning": "Anatomical Structure",
                },
            }
        ],
    }
    table = " ".join(_show(liver_everywhere_model).split())
    assert "(CHAOS task 2)" in table
    assert "1 liver #ffff00 Liver (SCT 10200004)" in table


def _render_labels(label_set: dict, width: int) -> str:
    import io

    from rich.console import Console

    from organseg.cli.models import print_label_set

    buffer = io.StringIO()
    print_label_set(
        label_set, Console(file=buffer, width=width, force_terminal=True, color_system=None)
    )
    return buffer.getvalue()


@pytest.mark.parametrize("width", [100, 60, 40, 14])
def test_the_label_table_fits_a_narrow_terminal_and_never_cuts_a_cell(
    amos8_model: Path, width: int
) -> None:
    from organseg.ensemble.describe import describe_model_dir

    out = _render_labels(describe_model_dir(amos8_model)["label_set"], width)
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in out
    for name, value, *_ in AMOS8_SHOWN:  # every label whole, beside its value
        assert any(line.split()[:1 + name.count(" ") + 1] == [str(value), *name.split()]
                   for line in lines), name  # fmt: skip
    if width == 100:  # the whole table: one label per row with its colour and code
        row = next(line for line in lines if line.split()[:2] == ["2", "right"])
        assert row.split()[2:] == ["kidney", "#ff00ff", "Kidney", "(SCT", "64033007)", "Right",
                                   "largest", "part"]  # fmt: skip
