"""Writing the model directory from training checkpoints: the one step between training and serving."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from organseg.config import ExperimentConfig, MemberConfig
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
from organseg.labels import LabelSet
from organseg.uri import is_uri


def _fetch_checkpoint(uri: str, into: Path) -> Path:
    """A local folder holding the checkpoint at ``uri`` (downloaded into ``into`` when remote)."""
    from ray.train import Checkpoint

    if not is_uri(uri):
        return Path(uri)
    Checkpoint(uri).to_directory(str(into))
    return into


def export_model_dir(
    config: ExperimentConfig,
    checkpoints: dict[str, str],
    organs: dict[str, tuple[str, ...]],
    label_set: LabelSet | None = None,
) -> tuple[Path, dict[str, list[dict[str, Any]]]]:
    """Copy each member's best checkpoint (``checkpoints``: member name → path or URI) into the model
    directory and write ensemble.yaml; returns the directory and each exported member's history.

    ``organs`` holds what each member learns (resolved once by the launcher). Members trained earlier into
    the same model directory but not part of this run are kept, so ``organseg train --member X``
    refreshes one member without dropping the rest. ``label_set``: the dataset's own labels, recorded
    in ensemble.yaml (None: the CHAOS task's organs).
    """
    model_dir = config.model_dir()
    model_dir.mkdir(parents=True, exist_ok=True)
    entries: dict[str, MemberEntry] = {}
    try:
        entries = {m.name: m for m in load_spec(model_dir).members}
    except ModelError:  # no (readable) earlier model directory: start a new one
        entries = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    folds: dict[str, list[tuple[int, str]]] = {}
    for name, checkpoint in checkpoints.items():
        parent, fold = fold_of(config, name)
        if fold is not None:  # exported together with the other folds of its k-fold member
            folds.setdefault(parent, []).append((fold, name))
            continue
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
    for parent, trained in folds.items():
        names = [name for _, name in sorted(trained)]
        entries[parent], fold_histories = _export_folds(
            config.member(parent),
            {fold: checkpoints[name] for fold, name in trained},
            organs[names[0]],
            model_dir,
        )
        histories.update(dict(zip(names, fold_histories, strict=True)))
    order = [m.name for m in config.members]
    members = sorted(
        entries.values(), key=lambda e: order.index(e.name) if e.name in order else len(order)
    )
    spec = spec_for(config, members, label_set)
    save_spec(spec, model_dir)
    return model_dir, histories


def fold_of(config: ExperimentConfig, name: str) -> tuple[str, int | None]:
    """``("liver3d", 2)`` for fold member ``liver3d-fold2`` of a k-fold member, else ``(name, None)``."""
    for member in config.members:
        if member.folds and name.startswith(f"{member.name}-fold"):
            suffix = name[len(member.name) + len("-fold") :]
            if suffix.isdigit():
                return member.name, int(suffix)
    return name, None


def _export_folds(
    member: MemberConfig,
    checkpoints: dict[int, str],
    organs: tuple[str, ...],
    model_dir: Path,
) -> tuple[MemberEntry, list[list[dict[str, Any]]]]:
    """One entry for a k-fold member: each trained fold's weights as ``<name>/fold<i>.pt``, averaged when
    served; its validation Dice is the mean over the folds (each validates on its held-out patients)."""
    staging = model_dir / f".{member.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    dices, histories = [], []
    for fold, checkpoint in sorted(checkpoints.items()):
        with tempfile.TemporaryDirectory() as tmp:
            source = _fetch_checkpoint(checkpoint, Path(tmp))
            shutil.copy2(source / WEIGHTS_FILE, staging / f"fold{fold}.pt")
            shutil.copy2(source / MEMBER_FILE, staging / f"fold{fold}.json")
            description = json.loads((source / MEMBER_FILE).read_text())
        histories.append(description.get("history", []))
        dice = description.get("metrics", {}).get("val_dice")
        if dice is not None:
            dices.append(float(dice))
    target = model_dir / member.name
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    entry = entry_for(member, organs, val_dice=sum(dices) / len(dices) if dices else None)
    entry.fold_weights = [f"{member.name}/fold{fold}.pt" for fold in sorted(checkpoints)]
    entry.weights = entry.fold_weights[0]
    return entry, histories
