"""The model directory: the one artifact training produces and prediction and serving consume.

::

    MODEL_DIR/
      ensemble.yaml          what this file's EnsembleSpec says: members, modalities, channels, thresholds
      <member>/model.pt      inference weights (state dict)
      <member>/member.json   the member's training config, organs, preprocessing and best metrics
      modality_classifier.json  the modality classifier for headerless volumes (when trained)
      learning_curves.png    (written by training; informational)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from organseg import __version__
from organseg.config import ExperimentConfig, MemberConfig, PostprocessConfig
from organseg.errors import ModelError
from organseg.io.atomic import write_text_atomic
from organseg.labels import LabelSet, chaos_label_set
from organseg.modalities import KnownModality, Modality
from organseg.preprocess.config import PreprocessConfig
from organseg.preprocess.volume_config import VolumeConfig

SPEC_FILE = "ensemble.yaml"
WEIGHTS_FILE = "model.pt"  # a member's inference weights (state dict), in its folder
MEMBER_FILE = "member.json"  # a member's config, organs, preprocessing and metrics, in its folder
FORMAT_VERSION = 1


class MemberEntry(BaseModel):
    """One trained member as the predictor needs it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arch: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    in_channels: int
    organs: list[str]
    modalities: list[KnownModality]
    weights: str  # path relative to the model directory
    val_dice: float | None = None
    epoch: int | None = None
    kind: Literal["2d", "3d"] = Field(
        "2d", description="2d: slices of the prepared grid; 3d: whole volumes at volume.spacing."
    )
    volume: VolumeConfig | None = Field(
        None, description="Spacing, patch and sliding-window settings of a 3D member."
    )
    fold_weights: list[str] = Field(
        default_factory=list,
        description="k-fold member: the weights of every fold (averaged); empty for a single network.",
    )


class ClassifierEntry(BaseModel):
    """The modality classifier stored beside the members (organseg.ensemble.modality_classifier)."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="Path relative to the model directory.")
    held_out_accuracy: float | None = Field(
        None,
        description="Out-of-fold accuracy on held-out series: each series predicted by a classifier "
        "fitted without its patient (None: not validated).",
    )
    held_out_series: dict[str, int] = Field(
        default_factory=dict, description="Out-of-fold held-out series per modality."
    )
    held_out_accuracy_per_class: dict[str, float] = Field(
        default_factory=dict, description="Out-of-fold accuracy per modality."
    )
    validation: str | None = Field(
        None, description="How it was validated (patient-grouped k-fold cross-validation)."
    )
    folds: int | None = Field(None, description="Cross-validation folds (grouped by patient).")
    patients: int | None = Field(None, description="Patients whose series were cross-validated.")


class EnsembleSpec(BaseModel):
    """Contents of ``ensemble.yaml``."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str
    task: int | None = Field(
        description="The CHAOS task; null for a model trained on a dataset with its own labels."
    )
    organseg_version: str = __version__
    created: str = Field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )
    organs: list[str]
    labels: dict[str, Any] | None = Field(
        None,
        description="The model's label set (organseg.labels.LabelSet.to_dict: names, values, colours, "
        "codes, post-processing) in channel order; absent in CHAOS model directories, whose labels are "
        "the CHAOS preset restricted to ``organs``.",
    )
    preprocess: PreprocessConfig
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    members: list[MemberEntry] = Field(min_length=1)
    modality_classifier: ClassifierEntry | None = None

    def modalities(self) -> list[Modality]:
        """Every modality some member accepts, in a stable order."""
        seen = {m for member in self.members for m in member.modalities}
        return [m for m in Modality if m in seen]

    def members_for(self, modality: Modality | str) -> list[MemberEntry]:
        """The ensemble for one modality: its members, or a ModelError naming what is available."""
        modality = Modality.parse(modality)
        members = [m for m in self.members if modality in m.modalities]
        if not members:
            available = [m.value for m in self.modalities()]
            raise ModelError(
                f"no member of ensemble {self.name!r} accepts {modality.value}; it serves {available}"
            )
        return members

    def label_set(self) -> LabelSet:
        """The labels this model segments: the recorded set, else the CHAOS preset's ``organs``."""
        if self.labels is not None:
            return LabelSet.from_dict(self.labels)
        chaos = chaos_label_set()
        return LabelSet(tuple(chaos[name] for name in self.organs), name=chaos.name)

    def organs_for(self, modality: Modality | str) -> list[str]:
        """Organs the ensemble of ``modality`` predicts: the union of what its members recorded they
        learned (``MemberEntry.organs``), in CHAOS label order."""
        names = {o for m in self.members_for(modality) for o in m.organs}
        return [o for o in self.organs if o in names]


def entry_for(
    member: MemberConfig, organs: tuple[str, ...] | list[str], **trained: Any
) -> MemberEntry:
    """The ensemble.yaml entry of a configured member that learns ``organs`` (``trained``: val_dice,
    epoch)."""
    return MemberEntry(
        name=member.name,
        arch=member.arch,
        kwargs=member.kwargs,
        in_channels=member.in_channels,
        organs=list(organs),
        modalities=list(member.modalities or []),
        weights=f"{member.name}/{WEIGHTS_FILE}",
        kind="3d" if member.dims == 3 else "2d",
        volume=member.volume,
        **trained,
    )


def spec_for(
    config: ExperimentConfig, members: list[MemberEntry], label_set: LabelSet | None = None
) -> EnsembleSpec:
    """The ensemble description of an experiment with these (trained) members; ``label_set``: the
    dataset's own labels (recorded, and its names are the organs), None for a CHAOS task."""
    from organseg.tasks import get_task

    if label_set is not None:
        return EnsembleSpec(
            name=config.name,
            task=None,
            organs=list(label_set.names),
            labels=label_set.to_dict(),
            preprocess=config.preprocess,
            postprocess=config.postprocess,
            members=members,
        )
    return EnsembleSpec(
        name=config.name,
        task=config.task,
        organs=list(get_task(config.task).organs),
        preprocess=config.preprocess,
        postprocess=config.postprocess,
        members=members,
    )


def write_untrained_model_dir(
    config: ExperimentConfig,
    model_dir: Path | str,
    seed: int = 0,
    labels: LabelSet | None = None,
    weightless: bool = False,
) -> Path:
    """A model directory whose members carry freshly initialised weights.

    Nothing to segment with, but everything else is real: benchmarks time the serving data plane with the
    true architectures (e.g. the four 512² CT members) and tests build graphs without training first.
    ``labels``: every member segments this label set (recorded in ensemble.yaml) instead of the
    organs of the config's CHAOS task. ``weightless``: empty weight files instead (no network is
    built), enough for the application builder, which reads ensemble.yaml and binds the graph
    without loading any weights.
    """
    from organseg.tasks import get_task

    model_dir = Path(model_dir)
    task = get_task(config.task)
    entries = []
    if not weightless:
        import torch

        torch.manual_seed(seed)
    for member in config.members:
        organs = labels.names if labels is not None else task.organs_for(member.modalities or [])
        entry = entry_for(member, organs)
        if member.folds:
            entry.fold_weights = [f"{member.name}/fold{i}.pt" for i in range(member.folds)]
            entry.weights = entry.fold_weights[0]
        for weights in entry.fold_weights or [entry.weights]:
            (model_dir / member.name).mkdir(parents=True, exist_ok=True)
            if weightless:
                (model_dir / weights).write_bytes(b"")
                continue
            from organseg.models import create_member

            network = create_member(
                member.arch,
                member.in_channels,
                len(entry.organs),
                encoder_weights=None,
                **member.kwargs,
            )
            torch.save(network.state_dict(), model_dir / weights)
        entries.append(entry)
    spec = spec_for(config, entries)
    if labels is not None:
        spec = spec.model_copy(update={"organs": list(labels.names), "labels": labels.to_dict()})
    save_spec(spec, model_dir)
    return model_dir


def load_spec(model_dir: Path | str) -> EnsembleSpec:
    """Read and validate ``MODEL_DIR/ensemble.yaml``; every weights file must exist."""
    model_dir = Path(model_dir)
    path = model_dir / SPEC_FILE
    if not path.is_file():
        raise ModelError(
            f"{model_dir}: not a model directory (no {SPEC_FILE}); train one with `organseg train`"
        )
    try:
        spec = EnsembleSpec.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: invalid ensemble description ({exc})") from None
    if spec.format_version > FORMAT_VERSION:
        raise ModelError(
            f"{path}: format {spec.format_version} is newer than this organseg understands"
        )
    for member in spec.members:
        for weights in member.fold_weights or [member.weights]:
            if not (model_dir / weights).is_file():
                raise ModelError(
                    f"{model_dir / weights}: weights of member {member.name!r} are missing"
                )
    if spec.modality_classifier and not (model_dir / spec.modality_classifier.file).is_file():
        raise ModelError(
            f"{model_dir / spec.modality_classifier.file}: modality classifier missing"
        )
    return spec


def save_spec(spec: EnsembleSpec, model_dir: Path | str) -> Path:
    """Write ``MODEL_DIR/ensemble.yaml`` atomically (a reader never sees half a file)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(
        model_dir / SPEC_FILE, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
