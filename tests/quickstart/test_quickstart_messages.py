"""What `organseg quickstart --data` says about real CT-only data, without training: the right CHAOS
task, no "held-out" for the training patient, no warning about an MR ensemble it never asked for."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

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
