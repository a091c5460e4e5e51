"""Writing the model directory from training checkpoints: the one step between training and serving."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from organseg.config import ExperimentConfig
from organseg.ensemble.spec import (
    MEMBER_FILE,
    WEIGHTS_FILE,
    MemberEntry,
    entry_for,
    load_spec,
    save_spec,
    spec_for,
)
from organseg.errors import ModelError
from organseg.uri import is_uri


def _fetch_checkpoint(uri: str, into: Path) -> Path:
    """A local folder holding the checkpoint at ``uri`` (downloaded into ``into`` when remote)."""
    from ray.train import Checkpoint

    if not is_uri(uri):
        return Path(uri)
    Checkpoint(uri).to_directory(str(into))
    return into


def export_model_dir(
    config: ExperimentConfig, checkpoints: dict[str, str], organs: dict[str, tuple[str, ...]]
) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """Copy each member's best checkpoint (``checkpoints``: member name → path or URI) into the model
    directory and write ensemble.yaml; returns the directory and each exported member's history.

    ``organs`` holds what each member learns (resolved once by the launcher). Members trained earlier into
    the same model directory but not part of this run are kept, so ``organseg train --member X``
    refreshes one member without dropping the rest.
    """
    model_dir = config.model_dir()
    model_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, MemberEntry] = {}
    try:
        entries = {m.name: m for m in load_spec(model_dir).members}
    except ModelError:  # no (readable) earlier model directory: start a new one
        entries = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for name, checkpoint in checkpoints.items():
        member = config.member(name)
        with tempfile.TemporaryDirectory() as tmp:
            source = _fetch_checkpoint(checkpoint, Path(tmp))
            target = model_dir / member.name
            staging = model_dir / f".{member.name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            for file in (WEIGHTS_FILE, MEMBER_FILE):
                shutil.copy2(source / file, staging / file)
            description = json.loads((staging / MEMBER_FILE).read_text())
            shutil.rmtree(target, ignore_errors=True)
            staging.replace(target)
        histories[name] = description.get("history", [])
        entries[member.name] = entry_for(
            member,
            organs[name],
            val_dice=description.get("metrics", {}).get("val_dice"),
            epoch=description.get("epoch"),
        )
    order = [m.name for m in config.members]
    members = sorted(
        entries.values(), key=lambda e: order.index(e.name) if e.name in order else len(order)
    )
    spec = spec_for(config, members)
    save_spec(spec, model_dir)
    return model_dir, histories
