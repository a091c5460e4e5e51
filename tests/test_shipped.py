"""The package's shipped files are the repository's files (links, not copies) and all of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.errors import ConfigError
from organseg.shipped import experiment_config, experiment_configs, serve_profile, serve_profiles

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_are_the_repository_configs() -> None:
    shipped = experiment_configs()
    repo = {p.stem: p for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped.keys() == repo.keys(), (
        "a config under configs/ needs its link in organseg/_shipped"
    )
    for name, path in shipped.items():
        assert path.is_symlink(), f"{path} must link to configs/{name}.yaml, not copy it"
        assert path.samefile(repo[name])


def test_shipped_serve_profiles_are_the_repository_profiles() -> None:
    shipped = serve_profiles()
    repo = {p.stem: p for p in (ROOT / "deploy" / "serve").glob("*.yaml")}
    assert shipped.keys() == repo.keys()
    for name, path in shipped.items():
        assert path.is_symlink()
        assert path.samefile(repo[name])
    assert serve_profile().samefile(ROOT / "deploy" / "serve" / "local.yaml")


def test_unknown_names_list_what_is_shipped() -> None:
    with pytest.raises(ConfigError, match="tiny"):
        experiment_config("no-such-config")
    with pytest.raises(ConfigError, match="local"):
        serve_profile("no-such-profile")
