"""Session-wide fixtures: the real CHAOS sample case and (lazily) one local Ray cluster."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def chaos_sample_root() -> Path | None:
    """The real CHAOS CT case: ``$ORGANSEG_CHAOS_SAMPLE`` or ``../shared/chaos-sample`` beside the repo."""
    env = os.environ.get("ORGANSEG_CHAOS_SAMPLE")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "chaos-sample")
    for path in candidates:
        if (path / "Train_Sets" / "CT").is_dir():
            return path
    return None


#: The series folders of an MR case in the CHAOS layout (synthetic or real), below ``Train_Sets/MR/<case>``.
MR_SERIES: dict[str, tuple[str, ...]] = {
    "in": ("T1DUAL", "DICOM_anon", "InPhase"),
    "out": ("T1DUAL", "DICOM_anon", "OutPhase"),
    "t2": ("T2SPIR", "DICOM_anon"),
}


def mr_series_folder(root: Path, case: int, kind: str) -> Path:
    """The DICOM folder of MR case ``case``'s series ``kind`` (a key of :data:`MR_SERIES`)."""
    return root / "Train_Sets" / "MR" / str(case) / Path(*MR_SERIES[kind])


def zip_bytes(entries: list[tuple[str, bytes]], deflate: bool = False) -> bytes:
    """A zip archive (in memory) of ``(name, data)`` entries, as an upload sends one."""
    import io
    import zipfile

    buffer = io.BytesIO()
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


#: Per-test time limits (pytest-timeout), so a hung test fails with its name within minutes instead of
#: running into CI's overall limit. Generous for what starts Ray, trains or reads the real case; an explicit
#: ``@pytest.mark.timeout(S)`` on a test wins.
TIMEOUT_S = 300
SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start their own local Ray cluster run first: once the session's shared cluster is up
    (it stays up until the session ends) they could not run without two clusters on one machine."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray_cluster") is None)
    for item in items:
        if item.get_closest_marker("timeout") is None:
            slow = any(
                item.get_closest_marker(m) for m in ("slow", "ray", "own_ray_cluster", "sample")
            )
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S if slow else TIMEOUT_S))


@pytest.fixture(scope="session")
def chaos_sample() -> Path:
    """Root of the real CHAOS sample; skips where absent unless ``ORGANSEG_REQUIRE_SAMPLE=1`` (CI)."""
    root = chaos_sample_root()
    if root is None:
        message = (
            "real CHAOS sample not found: set ORGANSEG_CHAOS_SAMPLE to a folder holding "
            "Train_Sets/CT (e.g. the organizers' Data_3D sample)"
        )
        if os.environ.get("ORGANSEG_REQUIRE_SAMPLE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def chaos_ct_case(chaos_sample: Path) -> Path:
    return chaos_sample / "Train_Sets" / "CT" / "1"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CHAOS dataset (2 CT + 2 MR, 64²) shared by the whole session. Read-only!"""
    from organseg.synth import write_dataset

    root = tmp_path_factory.mktemp("synth") / "chaos"
    write_dataset(root, ct=2, mr=2, size=64, slices=12, seed=7)
    return root


@pytest.fixture(scope="session")
def synth_ct_files(synth_root: Path) -> list[Path]:
    """The synthetic CT series' files (12 slices, file names run head to feet); ``ct_files`` (tests/pacs)
    are the real CHAOS CT case's."""
    return sorted((synth_root / "Train_Sets" / "CT" / "1" / "DICOM_anon").glob("*.dcm"))


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """One local Ray cluster for the whole session (Ray tests run serially); yields its GCS address.

    The dashboard stays on: Ray Train's placement-group cleaner needs it when Tune stops trials.
    """
    import logging

    import ray

    ray.init(num_cpus=4, include_dashboard=True, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def tiny_experiment(root: Path, name: str, **overrides: object):
    """A fast experiment (task 1, liver, CT and T2-SPIR; two 8-channel members; 64² slices) under ``root``.

    ``overrides`` replace top-level keys; ``members`` may be given whole.
    """
    from organseg.config import parse_config

    member_common = {"in_channels": 1, "epochs": 3, "batch_size": 8, "optimizer": {"lr": 0.002},
                     "modalities": ["CT", "MR-T2SPIR"]}  # fmt: skip
    data = {
        "name": name,
        "task": 1,
        "storage_path": str(root / "runs"),
        "dataset": {
            "synthetic": {"ct": 2, "mr": 2, "size": 64, "slices": 12, "seed": 3},
            "val_fraction": 0.34,
            "cache_dir": str(root / "cache"),
        },
        "preprocess": {"size": 64, "t1_mode": "separate"},
        "augment": {"enabled": False},
        "members": [
            {
                "name": "dualtail",
                "arch": "dualtail",
                "kwargs": {"base_channels": 8, "depth": 4},
                **member_common,
            },
            {
                "name": "attn",
                "arch": "attention_unet",
                "kwargs": {"base_channels": 8, "depth": 4},
                **member_common,
            },
        ],
        "tune": {
            "num_samples": 2,
            "max_concurrent_trials": 2,
            "epochs": 2,
            "grace_period": 1,
            "lr": {"low": 1e-5, "high": 1e-3, "log": True},
        },
    }
    data.update(overrides)
    return parse_config(data, source=f"{name} (test config)")


@pytest.fixture(scope="session")
def trained_ensemble(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory):
    """The tiny experiment trained once per session: ``(config, training report)``."""
    from organseg.train.launcher import train_experiment

    root = tmp_path_factory.mktemp("tiny")
    # 4 patients per kind: the modality classifier trained beside the members is cross-validated
    # over all 8 patients (4 out-of-fold series per modality, the default gate); half held out for
    # the members' validation Dice
    dataset = {
        "synthetic": {"ct": 4, "mr": 4, "size": 64, "slices": 12, "seed": 3},
        "val_fraction": 0.5,
        "cache_dir": str(root / "cache"),
    }
    config = tiny_experiment(root, "tiny-test", dataset=dataset)
    report = train_experiment(config)
    assert report.ok, [o.error for o in report.outcomes]
    return config, report


#: What every test deployment asks of the 2-core test machine.
SMALL_REPLICA = {"ray_actor_options": {"num_cpus": 0.1}}


def loopback_serve_config(
    model_dir: Path | str,
    http_port: int,
    grpc_port: int,
    settings: dict[str, dict] | None = None,
    **args: object,
) -> dict:
    """The Serve config a test deploys: every deployment of ``model_dir``'s graph on a tenth of a CPU,
    with ``settings`` (by deployment name) on top, on loopback ``http_port``/``grpc_port``; ``args``
    are the application's (:class:`organseg.serve.app.AppArgs`)."""
    from organseg.ensemble.spec import load_spec
    from organseg.serve.app import AppArgs, deployment_names
    from organseg.serve.runner import serve_schema

    settings = settings or {}
    names = deployment_names(load_spec(model_dir), AppArgs(model_dir=str(model_dir), **args))
    unknown = set(settings) - names
    assert not unknown, f"no such deployments in {model_dir}'s graph: {sorted(unknown)}"
    deployments = [{"name": n, **SMALL_REPLICA, **settings.get(n, {})} for n in sorted(names)]
    return serve_schema(model_dir, deployments, http_port=http_port, grpc_port=grpc_port, **args)


@contextlib.contextmanager
def serving(schema: dict, timeout_s: float = 300):
    """Deploy ``schema`` as `organseg serve` does; shut Serve down after the block."""
    from ray import serve

    from organseg.serve.runner import deploy, load_serve_config

    deploy(load_serve_config(schema), timeout_s=timeout_s)
    try:
        yield
    finally:
        serve.shutdown()


def confidently_wrong_model(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` whose modality classifier answers MR-T2SPIR for CT and CT for MR-T2SPIR,
    as confidently as the original answers right (its output columns swapped, as if trained with the
    two labels swapped), with the honest out-of-fold record of such a classifier: every CT and T2-SPIR
    series wrong, the T1 series right (the original got every held-out series right)."""
    import shutil

    import numpy as np

    from organseg.ensemble.modality_classifier import HeldOut, ModalityClassifier

    shutil.copytree(model_dir, dest)
    right = ModalityClassifier.load(dest)
    assert right is not None
    assert right.held_out is not None
    assert set(right.held_out.accuracy_per_class.values()) == {1.0}
    order = list(range(len(right.classes)))
    ct, t2 = right.classes.index("CT"), right.classes.index("MR-T2SPIR")
    order[ct], order[t2] = t2, ct
    tally = {
        c: (0 if c in ("CT", "MR-T2SPIR") else n, n)
        for c, (_, n) in right.held_out.per_class.items()
    }
    wrong = ModalityClassifier(
        **{
            **right.__dict__,
            "weights": right.weights[:, order],
            "bias": right.bias[order],
            "low": right.low[order],
            "high": right.high[order],
            "held_out": HeldOut(tally, right.held_out.folds, right.held_out.patients),
        }
    )
    assert np.array_equal(wrong.weights[:, ct], right.weights[:, t2])
    wrong.save(dest)
    return dest


@pytest.fixture(scope="session")
def multicontrast_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The MR cascade that stacks T1 in-phase, out-of-phase and the registered T2-SPIR as channels,
    trained once per session for the modules that serve it: ``(model dir, dataset root)``. Read-only!"""
    from tests.train.test_multicontrast import train_multicontrast

    return train_multicontrast(tmp_path_factory.mktemp("mc-model"))


def one_attn_ct_config(name: str):
    """The untrained test models' experiment: one small attention U-Net for CT on 64² slices."""
    from organseg.config import parse_config

    return parse_config(
        {
            "name": name,
            "task": 2,
            "dataset": {"synthetic": {"ct": 1}},
            "preprocess": {"size": 64},
            "members": [
                {
                    "name": "attn",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 8, "depth": 4},
                    "modalities": ["CT"],
                }
            ],
        },
        source=f"{name} (test model)",
    )


@pytest.fixture(scope="session")
def liver_everywhere_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory whose one untrained member says "liver" everywhere: its output layer is
    zeroed with a bias of +4 (probability 0.98), so the prediction is known without training. It
    accepts CT only."""
    import torch

    from organseg.ensemble.spec import load_spec, write_untrained_model_dir

    config = one_attn_ct_config("liver-everywhere")
    model_dir = write_untrained_model_dir(config, tmp_path_factory.mktemp("model"))
    (entry,) = load_spec(model_dir).members
    weights = torch.load(model_dir / entry.weights, map_location="cpu")
    assert weights["head.weight"].shape[0] == 1  # the output layer: one organ
    weights["head.weight"].zero_()
    weights["head.bias"].fill_(4.0)
    torch.save(weights, model_dir / entry.weights)
    return model_dir


#: AMOS's first eight labels as its dataset.json (MSD layout) gives them, spellings included: a
#: non-CHAOS label set whose values differ from CHAOS's (spleen 1, liver 6).
AMOS8_LABELS = {
    "0": "background",
    "1": "spleen",
    "2": "right kidney",
    "3": "left kidney",
    "4": "gall bladder",
    "5": "esophagus",
    "6": "liver",
    "7": "stomach",
    "8": "arota",
}


#: What AMOS's first eight labels are: (name, value, SNOMED CT code, meaning, side, largest part only).
AMOS8_SHOWN = [
    ("spleen", 1, "78961009", "Spleen", None, True),
    ("right kidney", 2, "64033007", "Kidney", "Right", True),
    ("left kidney", 3, "64033007", "Kidney", "Left", True),
    ("gall bladder", 4, "28231008", "Gallbladder", None, True),
    ("esophagus", 5, "32849002", "Esophagus", None, False),
    ("liver", 6, "10200004", "Liver", None, True),
    ("stomach", 7, "69695003", "Stomach", None, True),
    ("arota", 8, "15825003", "Aorta", None, False),  # AMOS's spelling, still the aorta's code
]


def label_rows(label_set: dict) -> list[tuple]:
    """A described label set (``models show --json``, ``GET /v1/models``) as :data:`AMOS8_SHOWN` rows."""
    rows = []
    for label in label_set["labels"]:
        assert label["code"]["scheme"] == "SCT"
        side = label["laterality"]["meaning"] if label["laterality"] else None
        rows.append(
            (label["name"], label["value"], label["code"]["value"], label["code"]["meaning"], side,
             label["largest_component"])
        )  # fmt: skip
    return rows


@pytest.fixture(scope="session")
def amos8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained one-member CT model (the graph of ``liver_everywhere_model``) whose member
    segments :data:`AMOS8_LABELS`, recorded in its ensemble.yaml. Read-only!"""
    from organseg.ensemble.spec import write_untrained_model_dir
    from organseg.labels import LabelSet

    labels = LabelSet.from_msd(AMOS8_LABELS, name="amos-8")
    return write_untrained_model_dir(
        one_attn_ct_config("amos-8"), tmp_path_factory.mktemp("amos8"), labels=labels
    )


def rescale_head(model_dir: Path, entry, prepared, target: float = 0.15) -> None:
    """Scale a member's last layer so that about ``target`` of ``prepared``'s voxels cross the
    threshold: a mask that depends on every slice's pixels (an untrained network predicts nothing)."""
    import numpy as np
    import torch

    from organseg.ensemble.members import MemberRunner

    runner = MemberRunner(model_dir, entry, "cpu")
    with torch.no_grad():
        logits = runner.model(torch.from_numpy(prepared.array.astype(np.float32))).numpy()
    q50, qt, q99 = np.percentile(logits, [50, 100 * (1 - target), 99])
    scale = 8.0 / float(q99 - q50)
    weights = model_dir / entry.weights
    state = torch.load(weights, weights_only=True)
    state["head.weight"] = state["head.weight"] * scale
    state["head.bias"] = (state["head.bias"] - float(qt)) * scale
    torch.save(state, weights)


def one_member_ct_model(dest: Path, series_folder: Path) -> Path:
    """The one-member CT model directory of the tests that compare masks (no training): its head is
    rescaled on ``series_folder`` so that about 15% of that series' voxels cross the threshold — a mask
    that depends on every slice's pixels (an untrained network alone predicts nothing)."""
    from organseg.config import parse_config
    from organseg.ensemble.predictor import prepare_input
    from organseg.ensemble.spec import load_spec, write_untrained_model_dir
    from organseg.io.dicom import read_dicom_series

    config = parse_config(
        {
            "name": "ct-test",
            "task": 2,
            "dataset": {"synthetic": {"ct": 2}},
            "preprocess": {"size": 64, "t1_mode": "separate"},
            "members": [
                {
                    "name": "a",
                    "arch": "attention_unet",
                    "kwargs": {"base_channels": 4, "depth": 3},
                    "modalities": ["CT"],
                }
            ],
        }
    )
    model_dir = write_untrained_model_dir(config, dest)
    spec = load_spec(model_dir)
    _, prepared = prepare_input(spec, read_dicom_series(series_folder))
    rescale_head(model_dir, spec.members[0], prepared)
    return model_dir


def t1_stack_model(dest: Path, ct_folder: Path, t1_in_folder: Path, t1_out_folder: Path) -> Path:
    """The untrained ``t1_mode: stack`` model directory of the stacking tests: a 2-channel T1 in+out
    member and a CT member, each rescaled to a non-trivial mask on the given series (no training)."""
    from organseg.config import parse_config
    from organseg.ensemble.predictor import prepare_input
    from organseg.ensemble.spec import load_spec, write_untrained_model_dir
    from organseg.io.dicom import read_dicom_series

    small = {"arch": "attention_unet", "kwargs": {"base_channels": 4, "depth": 3}}
    config = parse_config(
        {
            "name": "pacs-stack",
            "task": 1,
            "dataset": {"synthetic": {"ct": 1, "mr": 1}},
            "preprocess": {"size": 64, "t1_mode": "stack"},
            "members": [
                {"name": "ct", **small, "modalities": ["CT"]},
                {"name": "t1", **small, "in_channels": 2, "modalities": ["MR-T1-in"]},
            ],
        }
    )
    model_dir = write_untrained_model_dir(config, dest)
    spec = load_spec(model_dir)
    t1_in, t1_out = (read_dicom_series(f) for f in (t1_in_folder, t1_out_folder))
    ct = read_dicom_series(ct_folder)
    for entry, image, partner in ((spec.members[0], ct, None), (spec.members[1], t1_in, t1_out)):
        _, prepared = prepare_input(spec, image, None, partner)
        rescale_head(model_dir, entry, prepared)
    return model_dir


def cli_exit_code(*args: str | Path) -> int:
    """``organseg ARGS`` in-process, as the console script runs it: its exit code (output not captured,
    so module-scoped fixtures without capsys can use it too)."""
    from organseg.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """``organseg ARGS`` in-process: exit code, stdout, and stderr with its whitespace folded."""
    code = cli_exit_code(*args)
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def run_cli_folded(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """``organseg ARGS`` in-process: exit code, and stdout then stderr with whitespace folded (what
    a user reads in a terminal, for message checks)."""
    code = cli_exit_code(*args)
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())
