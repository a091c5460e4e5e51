"""What the package ships beside its code: the Serve profiles and the experiment configs.

The files live once, where people edit them (``deploy/serve/*.yaml``, ``configs/*.yaml``); the package's
``_shipped/`` folder holds symbolic links to them, which building a wheel (``pip install .``, the
Dockerfile) resolves into real files. Read through :mod:`importlib.resources`, so an installed organseg
finds them without the repository, and an editable install reads the repository's own files.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from organseg.errors import ConfigError

DEFAULT_SERVE_PROFILE = "local"


def _folder(name: str) -> Path:
    folder = files("organseg") / "_shipped" / name
    # organseg is installed as files (wheel or editable), never zipped: resources are plain paths
    if not isinstance(folder, Path):
        raise RuntimeError(f"organseg's shipped {name} are not on a file system ({folder})")
    return folder


def serve_profiles() -> dict[str, Path]:
    """Shipped Serve configs by name (``local``: CPU quickstart; ``gpu``: one GPU node)."""
    return {p.stem: p for p in sorted(_folder("serve").glob("*.yaml"))}


def serve_profile(name: str = DEFAULT_SERVE_PROFILE) -> Path:
    """The shipped Serve config ``name``; a ConfigError lists the others."""
    profiles = serve_profiles()
    if name not in profiles:
        raise ConfigError(f"no shipped Serve profile {name!r}; shipped are {sorted(profiles)}")
    return profiles[name]


def experiment_configs() -> dict[str, Path]:
    """Shipped experiment configs by name (``tiny``, ``quickstart``, ``task1-liver-ct-mr``, ...)."""
    return {p.stem: p for p in sorted(_folder("configs").glob("*.yaml"))}


def experiment_config(name: str) -> Path:
    """The shipped experiment config ``name``; a ConfigError lists the others."""
    configs = experiment_configs()
    if name not in configs:
        raise ConfigError(f"no shipped experiment config {name!r}; shipped are {sorted(configs)}")
    return configs[name]
