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
