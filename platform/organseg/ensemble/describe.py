"""What a model directory holds, as plain data: for ``organseg models show`` and anyone auditing one.

A deployment reviewer needs, without starting a server: which ensemble answers which modality, what
each member is and how well it validated, what input it stacks, the version answers will carry, and
whether the modality classifier may route headerless volumes (and why not), and the label set the
model segments (a client reads the label map by it: names, voxel values, colours, codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.routing import ModalityPolicy, classifier_status
from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.ensemble.version import ModelVersion, model_version
from organseg.labels import Code, Label, LabelSet, StructureCode, chaos_label_set


def describe_model_dir(
    model_dir: Path | str, policy: ModalityPolicy | None = None
) -> dict[str, Any]:
    """The model directory's ensembles, members, version and modality classifier (under ``policy``,
    the default gate unless given). Raises :class:`organseg.errors.ModelError` for a broken one."""
    classifier = ModalityClassifier.load(model_dir)
    return describe(
        load_spec(model_dir), model_version(model_dir), classifier, policy or ModalityPolicy()
    )


def describe(
    spec: EnsembleSpec,
    version: ModelVersion,
    classifier: ModalityClassifier | None,
    policy: ModalityPolicy,
) -> dict[str, Any]:
    """The one description of a loaded model directory: ``organseg models show`` prints it, and
    ``GET /v1/models`` and gRPC ListModels answer its :func:`served_view`."""
    status = classifier_status(classifier, policy)
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
            # a model stacking a dataset's channels: each (name, modality), in input order
            **(
                {
                    "channels": [
                        {"name": c.name, "modality": c.modality.value}
                        for c in spec.preprocess.channels
                    ]
                }
                if spec.preprocess.channels
                else {}
            ),
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
        "label_set": describe_label_set(spec.label_set()),
    }


def _code(code: Code | None) -> dict[str, str] | None:
    return (
        None
        if code is None
        else {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}
    )


def describe_label_set(labels: LabelSet) -> dict[str, Any]:
    """The label set as plain data, in channel order: each label's voxel value, display colour, coded
    concept (SNOMED CT, or organseg's private scheme carrying the name), laterality and whether
    post-processing keeps only its largest connected component; ``ignore`` is the value left out of
    training and metrics (None: none)."""
    return {
        "name": labels.name,
        "ignore": labels.ignore,
        "labels": [
            {
                "name": label.name,
                "value": label.value,
                "colour": list(label.colour),
                "code": _code(label.code.type),
                "laterality": _code(label.code.laterality),
                "largest_component": label.largest_component,
                "category": _code(label.code.category),
            }
            for label in labels
        ],
    }


def label_set_from_description(described: Mapping[str, Any]) -> LabelSet | None:
    """The label set a served model describes (``GET /v1/models``, or ListModels as a dict): what a
    client writes a remote answer's label map with (DICOM-SEG codes, overlay colours). None for the
    CHAOS preset's organs, which a label map of CHAOS organ ids is written with as it always was.

    ListModels leaves out what protobuf holds by default (an unset laterality, ``False``, ``ignore``).
    """

    def code(data: Mapping[str, Any] | None) -> Code | None:
        return None if not data else Code(data["value"], data["scheme"], data["meaning"])

    labels = tuple(
        Label(
            name=lb["name"],
            value=int(lb.get("value", 0)),
            colour=tuple(int(c) for c in lb["colour"]),  # type: ignore[arg-type]
            code=StructureCode(code(lb["category"]), code(lb["code"]), code(lb.get("laterality"))),  # type: ignore[arg-type]
            largest_component=bool(lb.get("largest_component", False)),
        )
        for lb in described["labels"]
    )
    chaos = chaos_label_set()
    if all(lb.name in chaos.names and chaos[lb.name] == lb for lb in labels):
        return None
    return LabelSet(labels, ignore=described.get("ignore"), name=described.get("name", ""))


#: The member fields a served model reports (the API's MemberInfo).
_SERVED_MEMBER_FIELDS = ("name", "arch", "organs", "modalities", "in_channels", "val_dice")


def served_view(
    description: dict[str, Any], version: ModelVersion, served: set[str] | None = None
) -> dict[str, Any]:
    """What ``GET /v1/models`` (and gRPC ListModels) answer: the :func:`describe` of the served model
    directory in the API's shape; ``served`` limits the ensembles to the modalities deployed."""
    status = description["modality_classifier"]
    if status is not None:
        status = {k: v for k, v in status.items() if k != "summary"}
    return {
        "name": description["name"],
        "task": description["task"],
        "organseg_version": description["organseg_version"],
        "created": description["created"],
        "model_version": version.id,
        "version": version.as_dict(),
        **description["input"],
        "ensembles": [
            e for e in description["ensembles"] if served is None or e["modality"] in served
        ],
        "members": [{k: m[k] for k in _SERVED_MEMBER_FIELDS} for m in description["members"]],
        "modality_classifier": status,
        "label_set": description["label_set"],
    }
