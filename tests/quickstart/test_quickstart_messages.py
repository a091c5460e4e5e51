"""What `organseg quickstart --data` says about real CT-only data, without training: the right CHAOS
task, no "held-out" for the training patient, no warning about an MR ensemble it never asked for. And
what it makes of an nnU-Net or MSD dataset before anything trains: the dataset's own labels and
channels, or one error naming the key it cannot use."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from organseg.io.volume import Modality
from organseg.quickstart import (
    QuickstartOptions,
    _heldout_from_split,
    _restrict_to_data,
    _serve_schema,
    _task_for,
    experiment,
)


def test_task_follows_the_modalities_present() -> None:
    assert _task_for({Modality.CT}, 1) == 2
    assert _task_for({Modality.MR_T2SPIR, Modality.MR_T1_IN}, 1) == 3
    assert _task_for({Modality.CT, Modality.MR_T2SPIR}, 1) == 1
    assert _task_for({Modality.CT, Modality.MR_T2SPIR}, 4) == 4
    assert _task_for({Modality.MR_T2SPIR}, 5) == 5


def test_ct_only_data_single_patient(chaos_sample: Path, tmp_path: Path) -> None:
    options = QuickstartOptions(workdir=tmp_path, data=chaos_sample, size=32)
    config = experiment(options)
    out = io.StringIO()
    console = Console(file=out, width=60)
    _restrict_to_data(config, chaos_sample, console)
    assert config.task == 2
    assert all(m.modalities == [Modality.CT] for m in config.members)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refs, independent = _heldout_from_split(config, console)
    assert [r.case_id for r in refs] == ["CT/1"]
    assert not independent  # one patient: its score is not called held-out
    assert not caught  # training already warned about the single patient
    text = " ".join(out.getvalue().split())
    assert "CHAOS task 2 (liver, CT)" in text
    assert "no held-out score" in text
    assert "CT and MR" not in text
    assert str(chaos_sample) in out.getvalue()  # a path is printed whole, never folded mid-word


def test_no_warning_about_deployments_a_ct_model_lacks(liver_everywhere_model: Path) -> None:
    from organseg.serve.runner import load_serve_config

    options = QuickstartOptions()

    def serve_config_warnings(load) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load()
        return [str(w.message) for w in caught if "Serve config settings" in str(w.message)]

    # The shared profile tunes MR deployments too: loaded as is, it warns for a CT-only model ...
    assert serve_config_warnings(
        lambda: load_serve_config(options.serve_config, liver_everywhere_model, 8000, 9000)
    )
    # ... which the quickstart expects and keeps quiet about.
    assert serve_config_warnings(lambda: _serve_schema(options, liver_everywhere_model)) == []


@pytest.fixture(scope="module")
def nnunet_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from organseg.synth.abdomen import write_abdomen_dataset

    root = tmp_path_factory.mktemp("qs-nnunet")
    return write_abdomen_dataset(root / "nnunet", cases=2, size=32, slices=8, seed=3)


@pytest.mark.parametrize("layout", ["nnunet", "msd"])
def test_a_dataset_with_its_own_labels_drops_the_chaos_task(
    nnunet_dataset: Path, tmp_path: Path, layout: str
) -> None:
    from organseg.config import dump_config
    from organseg.datasets.write import nnunet_to_msd
    from organseg.io.volume import Modality

    data = nnunet_dataset if layout == "nnunet" else nnunet_to_msd(nnunet_dataset, tmp_path / "msd")
    options = QuickstartOptions(workdir=tmp_path / "qs", data=data, epochs=1, size=32)
    config = experiment(options)
    assert config.dataset.format == layout
    assert config.dataset.path == data.resolve()
    assert config.dataset.synthetic is None
    assert config.output == (tmp_path / "qs" / "model").resolve()
    assert [m.name for m in config.members] == ["dualtail", "attention-unet"]  # the quickstart's
    assert all(m.modalities == [Modality.CT] for m in config.members)  # from channel_names
    assert all(m.epochs == 1 for m in config.members)
    written = yaml.safe_load(dump_config(config))
    assert "task" not in written


def _broken(src: Path, dest: Path, **meta: object) -> Path:
    import shutil

    shutil.copytree(src, dest)
    data = json.loads((dest / "dataset.json").read_text())
    (dest / "dataset.json").write_text(json.dumps({**data, **meta}))
    return dest


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"channel_names": {"0": "T1"}}, r"dataset\.json: channel_names\.0 \('T1'\): the modality"),
        (
            {
                "labels": {"background": 0, "organs": [1, 2], "liver": 1},
                "regions_class_order": [1, 2],
            },
            r"dataset\.json: regions_class_order",
        ),
        ({"numTraining": 5}, r"dataset\.json: numTraining: is 5 but"),
    ],
    ids=["unknown-channel", "regions", "num-training"],
)
def test_a_dataset_the_quickstart_cannot_use_is_one_error_before_training(
    nnunet_dataset: Path, tmp_path: Path, capsys, meta: dict, expected: str
) -> None:
    import re

    from tests.conftest import run_cli

    data = _broken(nnunet_dataset, tmp_path / "ds", **meta)
    workdir = tmp_path / "qs"
    code, _, err = run_cli(capsys, "quickstart", "--data", data, "--workdir", workdir)
    assert code == 2
    assert "Traceback" not in err
    assert re.search(expected, err), err
    assert err.count("error:") == 1
    assert not (workdir / "runs").exists()  # nothing trained
    assert not (workdir / "experiment.yaml").exists()


def test_a_folder_in_no_dataset_layout_is_named(tmp_path: Path, capsys) -> None:
    from tests.conftest import run_cli

    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys, "quickstart", "--data", tmp_path / "empty", "--workdir", tmp_path / "qs"
    )
    assert code == 2
    assert f"{tmp_path / 'empty'}: --data takes a CHAOS folder" in err
