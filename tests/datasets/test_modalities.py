"""Each case's modality: channel names that are modalities, explicit channel and case maps in
dataset.json or the config (the config's winning), and the refusals that name the key to set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from organseg.config import load_config
from organseg.datasets import open_nnunet
from organseg.datasets.refs import case_modalities, dataset_refs
from organseg.errors import ConfigError, DataError
from organseg.modalities import Modality
from organseg.train.data import open_labelled_dataset, prepare_data
from tests.conftest import run_cli
from tests.datasets.builder import build_msd, build_nnunet, edit_json

AMOS_LIKE = ("amos_0001", "amos_0002", "amos_0500", "amos_0501", "amos_0502")
#: AMOS's own split: cases up to 0500 are CT, from 0501 MR (channel_names says "CT" for all).
AMOS_CASE_MAP = {"amos_0[0-4]??": "CT", "amos_0500": "CT", "amos_05??": "MR"}


def _config(root: Path, dataset: Path, members: list[dict] | None = None, **keys: object) -> Path:
    member = {"arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}, "epochs": 1}
    data = {
        "name": "mixed",
        "storage_path": str(root / "runs"),
        "dataset": {"path": str(dataset), "val_fraction": 0.4, **keys},
        "preprocess": {"size": 32},
        "augment": {"enabled": False},
        "members": members or [{"name": "one"} | member],
    }
    path = root / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _modalities(dataset) -> dict[str, list[str]]:
    return {k: [m.value for m in v] for k, v in case_modalities(dataset).items()}


# -- channel names and channel maps -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CT", "CT"),
        ("ct", "CT"),
        ("MR", "MR"),
        ("MR-T2SPIR", "MR-T2SPIR"),
        ("mr-t1-in", "MR-T1-in"),
    ],
)
def test_a_channel_named_by_a_modality_is_that_modality(
    tmp_path: Path, name: str, expected: str
) -> None:
    dataset = open_nnunet(build_nnunet(tmp_path / "ds", channels=(name,)))
    assert set(map(tuple, _modalities(dataset).values())) == {(expected,)}


@pytest.mark.parametrize("name", ["T2", "MRI", "t2spir", "inphase"])
def test_no_alias_establishes_a_modality(tmp_path: Path, name: str) -> None:
    """Modality.lookup's aliases help a user type --modality; they never state a dataset's channel."""
    dataset = open_nnunet(build_nnunet(tmp_path / "ds", channels=(name,)))
    assert dataset.check() == []  # nothing wrong with the dataset as nnU-Net reads it...
    with pytest.raises(DataError) as caught:  # ...but nothing routes it
        case_modalities(dataset)
    message = str(caught.value)
    assert f"channel_names.0 ({name!r})" in message
    assert "organseg_channel_modalities" in message
    assert "dataset.channel_modalities" in message


def test_dataset_json_maps_channels_by_number_or_name(tmp_path: Path) -> None:
    root = build_nnunet(
        tmp_path / "ds",
        channels=("T2", "T1in"),
        extra={"organseg_channel_modalities": {"T2": "MR-T2SPIR", "1": "MR-T1-in"}},
    )
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert _modalities(dataset)["case_a"] == ["MR-T2SPIR", "MR-T1-in"]
    refs = dataset_refs(dataset)
    assert {(r.case_id, r.modality) for r in refs if r.patient == "case_a"} == {
        ("case_a/MR-T2SPIR", Modality.MR_T2SPIR),
        ("case_a/MR-T1-in", Modality.MR_T1_IN),
    }
    assert dataset.load("case_a").channels[0].modality is Modality.MR_T2SPIR


@pytest.mark.parametrize(
    ("mapping", "where", "message"),
    [
        ({"0": "T2"}, "organseg_channel_modalities.0", "unknown modality 'T2'"),
        ({"3": "MR"}, "organseg_channel_modalities.3", "no channel '3'"),
        ({"FLAIR": "MR"}, "organseg_channel_modalities.FLAIR", "no channel 'FLAIR'"),
        (["MR"], "organseg_channel_modalities", "must map channel numbers or names"),
    ],
)
def test_a_broken_channel_map_is_a_problem_naming_its_key(
    tmp_path: Path, mapping: object, where: str, message: str
) -> None:
    root = build_nnunet(
        tmp_path / "ds", channels=("T2",), extra={"organseg_channel_modalities": mapping}
    )
    problems = open_nnunet(root).check()
    assert [p.where for p in problems] == [f"{root / 'dataset.json'}: {where}"]
    assert message in problems[0].message


def test_the_config_map_wins_over_the_dataset_json_map(tmp_path: Path) -> None:
    root = build_nnunet(
        tmp_path / "ds", channels=("T2",), extra={"organseg_channel_modalities": {"0": "MR-T2SPIR"}}
    )
    config = load_config(_config(tmp_path, root, channel_modalities={"T2": "MR"}))
    assert _modalities(open_labelled_dataset(config))["case_a"] == ["MR"]
    config = load_config(_config(tmp_path, root))
    assert _modalities(open_labelled_dataset(config))["case_a"] == ["MR-T2SPIR"]


def test_the_config_map_takes_exact_values_and_names_its_key(tmp_path: Path) -> None:
    root = build_nnunet(tmp_path / "ds", channels=("T2",))
    with pytest.raises(ConfigError, match=r"dataset\.channel_modalities\.0.*unknown modality 'T2'"):
        load_config(
            _config(tmp_path, root, channel_modalities={"0": "T2"})
        )  # no alias: T2 ≠ T2-SPIR
    config = load_config(_config(tmp_path, root, channel_modalities={"1": "MR"}))
    with pytest.raises(DataError, match=r"dataset\.channel_modalities\.1: no channel '1'"):
        open_labelled_dataset(config)


def test_config_check_names_the_channel_to_map(tmp_path: Path, capsys) -> None:
    root = build_nnunet(tmp_path / "ds", channels=("T2",))
    code, _, err = run_cli(capsys, "config", "check", _config(tmp_path, root))
    assert code == 2
    assert "Traceback" not in err
    assert re.search(r"dataset\.json: channel_names\.0 \('T2'\): the modality", err), err
    config = _config(tmp_path, root, channel_modalities={"0": "MR"})
    code, _out, err = run_cli(capsys, "config", "check", config)
    assert code == 0, err


def test_msd_modality_names_map_the_same_way(tmp_path: Path) -> None:
    root = build_msd(tmp_path / "ds", channels=("T2",))
    edit_json(root / "dataset.json", organseg_channel_modalities={"0": "MR"})
    from organseg.datasets import open_msd

    dataset = open_msd(root)
    assert dataset.check() == []
    assert set(map(tuple, _modalities(dataset).values())) == {("MR",)}


# -- mixed datasets: a modality per case -----------------------------------------------------------
def test_a_case_map_gives_each_case_of_a_mixed_dataset_its_modality(tmp_path: Path) -> None:
    root = build_nnunet(
        tmp_path / "ds", cases=AMOS_LIKE, extra={"organseg_case_modalities": AMOS_CASE_MAP}
    )
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert _modalities(dataset) == {
        "amos_0001": ["CT"],
        "amos_0002": ["CT"],
        "amos_0500": ["CT"],  # the earlier pattern decides
        "amos_0501": ["MR"],
        "amos_0502": ["MR"],
    }
    assert dataset.load("amos_0501").image.modality is Modality.MR


def test_case_map_problems_name_the_key_and_the_case(tmp_path: Path) -> None:
    root = build_nnunet(
        tmp_path / "ds",
        cases=AMOS_LIKE,
        extra={"organseg_case_modalities": {"amos_000?": "CT", "amos_09*": "MR", "x": "T2"}},
    )
    json_path = root / "dataset.json"
    problems = {p.where: p.message for p in open_nnunet(root).check()}
    assert "unknown modality 'T2'" in problems[f"{json_path}: organseg_case_modalities.x"]
    assert "matches no case" in problems[f"{json_path}: organseg_case_modalities.amos_09*"]
    unmatched = problems[f"{json_path}: organseg_case_modalities"]
    assert "amos_0500, amos_0501, amos_0502" in unmatched
    assert "every case needs" in unmatched


def test_a_case_map_is_for_single_channel_datasets(tmp_path: Path) -> None:
    root = build_nnunet(
        tmp_path / "ds", channels=("CT", "MR"), extra={"organseg_case_modalities": {"*": "MR"}}
    )
    problems = open_nnunet(root).check()
    assert [p.where.rsplit(": ", 1)[-1] for p in problems] == ["organseg_case_modalities"]
    assert "single-channel" in problems[0].message


def test_config_check_names_the_config_case_map(tmp_path: Path, capsys) -> None:
    root = build_nnunet(tmp_path / "ds", cases=AMOS_LIKE)
    config = _config(tmp_path, root, case_modalities={"amos_000?": "CT"})
    code, _, err = run_cli(capsys, "config", "check", config)
    assert code == 2
    assert "Traceback" not in err
    assert "dataset.case_modalities: no pattern matches case(s) amos_0500" in err, err


def test_data_inspect_names_each_cases_modality(tmp_path: Path, capsys) -> None:
    root = build_nnunet(
        tmp_path / "ds", cases=AMOS_LIKE, extra={"organseg_case_modalities": AMOS_CASE_MAP}
    )
    code, out, err = run_cli(capsys, "data", "inspect", root, "--json")
    assert code == 0, err
    by_case = {c["case"]: c["modality"] for c in json.loads(out)["cases"]}
    assert by_case == {
        "amos_0001": ["CT"],
        "amos_0002": ["CT"],
        "amos_0500": ["CT"],
        "amos_0501": ["MR"],
        "amos_0502": ["MR"],
    }
    unmapped = build_nnunet(tmp_path / "plain", channels=("T2",))
    code, out, err = run_cli(capsys, "data", "inspect", unmapped, "--json")
    assert code == 0, err
    assert {tuple(c["modality"]) for c in json.loads(out)["cases"]} == {("unknown",)}


def test_members_of_a_mixed_dataset_pick_their_cases(tmp_path: Path) -> None:
    """A CT member and an MR member of one AMOS-like dataset: each trains and validates on the cases
    of its modality only; a member without modalities takes both."""
    root = build_nnunet(
        tmp_path / "ds",
        cases=(*AMOS_LIKE, "amos_0503"),
        extra={"organseg_case_modalities": AMOS_CASE_MAP},
    )
    member = {"arch": "dualtail", "kwargs": {"base_channels": 8, "depth": 3}, "epochs": 1}
    config = load_config(
        _config(
            tmp_path,
            root,
            members=[
                {"name": "ct", "modalities": ["CT"]} | member,
                {"name": "mr", "modalities": ["MR"]} | member,
                {"name": "both"} | member,
            ],
        )
    )
    data = prepare_data(config)
    ct, mr, both = config.members
    cases = {
        name: {
            split: sorted({i.split("/")[0] for i in data.ids_for(m, split)})
            for split in ("train", "val")
        }
        for name, m in (("ct", ct), ("mr", mr), ("both", both))
    }
    ct_cases = {"amos_0001", "amos_0002", "amos_0500"}
    mr_cases = {"amos_0501", "amos_0502", "amos_0503"}
    for split in ("train", "val"):
        assert cases["ct"][split]
        assert set(cases["ct"][split]) <= ct_cases
        assert cases["mr"][split]
        assert set(cases["mr"][split]) <= mr_cases
    assert set(cases["both"]["train"]) | set(cases["both"]["val"]) == ct_cases | mr_cases
    assert both.modalities == [Modality.CT, Modality.MR]
    by_id = {s.id: s for s in data.cache.samples}
    assert {by_id[i].modality for i in data.ids_for(mr, "train")} == {Modality.MR}


def test_the_docs_maps_route_an_amos_like_dataset(tmp_path: Path) -> None:
    """docs/data.md "Modalities of your cases": its dataset.json keys and its config do what the
    text says on an AMOS-like dataset."""
    from tests.conftest import REPO_ROOT
    from tests.docs.blocks import block_under

    doc, heading = REPO_ROOT / "docs" / "data.md", "Modalities of your cases"
    keys = json.loads("{" + block_under(doc, heading, "json").text + "}")
    documented = yaml.safe_load(block_under(doc, heading, "yaml").text)
    assert documented["dataset"]["case_modalities"] == keys["organseg_case_modalities"]
    root = build_nnunet(
        tmp_path / "ds", cases=AMOS_LIKE, extra=keys | {"organseg_channel_modalities": {}}
    )
    dataset = open_nnunet(root)
    assert dataset.check() == []
    assert {c: m[0] for c, m in _modalities(dataset).items()} == {
        "amos_0001": "CT", "amos_0002": "CT", "amos_0500": "CT", "amos_0501": "MR", "amos_0502": "MR"
    }  # fmt: skip
    t2 = build_nnunet(
        tmp_path / "t2", channels=("T2",), extra=keys | {"organseg_case_modalities": None}
    )
    edit_json(t2 / "dataset.json", organseg_case_modalities=None)
    assert set(map(tuple, _modalities(open_nnunet(t2)).values())) == {("MR-T2SPIR",)}
    member = {"kwargs": {"base_channels": 8, "depth": 3}, "epochs": 1}
    members = [m | member for m in documented["members"]]
    config = load_config(
        _config(
            tmp_path,
            root,
            members=members,
            **{k: v for k, v in documented["dataset"].items() if k != "path"},
        )
    )
    assert [m.value for m in config.members[1].modalities] == ["MR"]
    assert _modalities(open_labelled_dataset(config))["amos_0501"] == ["MR"]
