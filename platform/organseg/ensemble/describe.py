"""What a model directory holds, as plain data: for ``organseg models show`` and anyone auditing one.

A deployment reviewer needs, without starting a server: which ensemble answers which modality, what
each member is and how well it validated, what input it stacks, the version answers will carry, and
whether the modality classifier may route headerless volumes (and why not).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.routing import ModalityPolicy, classifier_status
from organseg.ensemble.spec import load_spec
from organseg.ensemble.version import model_version


def describe_model_dir(
    model_dir: Path | str, policy: ModalityPolicy | None = None
) -> dict[str, Any]:
    """The model directory's ensembles, members, version and modality classifier (under ``policy``,
    the default gate unless given). Raises :class:`organseg.errors.ModelError` for a broken one."""
    spec = load_spec(model_dir)
    version = model_version(model_dir)
    classifier = ModalityClassifier.load(model_dir)
    status = classifier_status(classifier, policy or ModalityPolicy())
    if status is not None and classifier is not None:
        status = {"summary": classifier.summary(), **status}
    return {
        "name": spec.name,
        "task": spec.task,
        "created": spec.created,
        "organseg_version": spec.organseg_version,
        "model_version": version.id,
        "sha256": version.sha256,
        "organs": spec.organs,
        "input": {
            "size": spec.preprocess.size,
            "t1_mode": spec.preprocess.t1_mode,
            "t2_channel": spec.preprocess.t2_channel,
        },
        "ensembles": [
            {
                "modality": modality.value,
                "members": [m.name for m in spec.members_for(modality)],
                "organs": spec.organs_for(modality),
            }
            for modality in spec.modalities()
        ],
        "members": [
            {
                "name": m.name,
                "arch": m.arch,
                "kind": m.kind,
                "in_channels": m.in_channels,
                "organs": m.organs,
                "modalities": [x.value for x in m.modalities],
                "val_dice": m.val_dice,
                "epoch": m.epoch,
                "folds": len(m.fold_weights) or None,
            }
            for m in spec.members
        ],
        "modality_classifier": status,
    }
