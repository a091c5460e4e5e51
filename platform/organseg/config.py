"""The experiment configuration: one YAML file validated by pydantic.

An experiment names its data, its CHAOS task, its preprocessing and its ensemble members; ``organseg
train``, ``organseg tune`` and the quickstart all read this one schema. Every model forbids unknown keys,
so a typo is an error naming the key, not a silently ignored setting. Relative paths resolve against the
config file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from organseg.errors import ConfigError, FieldErrors, ModelError
from organseg.modalities import ExactModality, KnownModality, Modality
from organseg.preprocess.config import AugmentConfig, PreprocessConfig
from organseg.preprocess.volume_config import VolumeConfig
from organseg.tasks import CHAOS_TASKS, get_task, unknown_task_message
from organseg.uri import is_uri

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

Problems = list[tuple[tuple[str | int, ...], str]]


def _folder_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} must be lower-case letters, digits, '-' or '_'")
    return value


#: A name that becomes a folder (and a Serve deployment name): lower-case letters, digits, '-', '_'.
FolderName = Annotated[
    str,
    AfterValidator(_folder_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticDataConfig(_Strict):
    """A synthetic CHAOS-layout dataset generated on first use (tests, demos, the quickstart)."""

    ct: int = Field(4, ge=0, description="Number of CT patients.")
    mr: int = Field(
        0, ge=0, description="Number of MR patients (each with T1-DUAL in/out and T2-SPIR)."
    )
    size: int = Field(64, ge=32, description="In-plane size of the generated slices (pixels).")
    slices: int | None = Field(
        None, ge=4, description="Slices per volume (default: the generator's own)."
    )
    seed: int = Field(0, description="Seed of the generator: same seed, same dataset.")


class DatasetConfig(_Strict):
    """Where the cases come from and how patients are split into training and validation."""

    path: Path | None = Field(
        None,
        description="A dataset folder: nnU-Net v2 raw (``dataset.json``, ``imagesTr``, ``labelsTr``), "
        "Medical Segmentation Decathlon, or CHAOS (holding ``Train_Sets/CT``, ``Train_Sets/MR``); "
        "relative to the config file. Its contents are checked by ``organseg config check`` and when "
        "training starts, not when the config loads.",
    )
    format: Literal["nnunet", "msd", "chaos"] | None = Field(
        None,
        description="Layout of ``path``: ``nnunet``, ``msd`` or ``chaos``; detected from the folder "
        "when absent (``organseg data inspect`` says which and why). nnU-Net and MSD datasets bring "
        "their own label set and channel modalities; ``task`` is for CHAOS only.",
    )
    fold: int | None = Field(
        None,
        ge=0,
        description="nnU-Net/MSD: train on this fold of the dataset's ``splits_final.json`` (its "
        "``val`` cases validate). None: the first fold when the file is present, else a split by "
        "``val_fraction``.",
    )
    channel_modalities: dict[str, ExactModality] | None = Field(
        None,
        description="nnU-Net/MSD: the modality of each channel, by channel number or name (e.g. "
        '``{"0": "MR-T2SPIR"}``), replacing the dataset.json ``organseg_channel_modalities``. '
        "Needed when a channel's name is not itself a modality (``CT``, ``MR``, ``MR-T1-in``, "
        "``MR-T1-out``, ``MR-T2SPIR``): organseg does not guess that ``T2`` is T2-SPIR. ``MR`` is the "
        "generic MR kind, for MR of no named sequence.",
    )
    case_modalities: dict[str, ExactModality] | None = Field(
        None,
        description="nnU-Net/MSD, single-channel datasets that mix modalities (AMOS: CT and MR "
        "cases): case-id patterns (``*``, ``?``, ``[0-4]``) to modalities, tried in order, the first "
        "match deciding; every case must match one. Replaces the dataset.json "
        "``organseg_case_modalities``; members train on the cases of their ``modalities``.",
    )
    channels: Literal["stack", "separate"] | None = Field(
        None,
        description="nnU-Net/MSD datasets with several channels per case: ``stack`` reads every "
        "channel of a case, in dataset.json order, as one multi-channel input (nnU-Net's own "
        "semantics; e.g. CT arterial + venous phase; members take ``in_channels`` = the number of "
        "channels, and prediction and serving need every channel); ``separate`` makes each channel "
        "a sample of its own modality. Default: ``stack``, except for channels that are all T1 "
        "in/out-phase or T2-SPIR, which ``preprocess.t1_mode`` / ``t2_channel`` combine as for CHAOS.",
    )
    synthetic: SyntheticDataConfig | None = Field(
        None,
        description="Generate a synthetic CHAOS-layout dataset instead (exactly one of ``path`` and "
        "``synthetic``).",
    )
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="Share of patients held out for validation (split by patient, CT and MR "
        "patients separately).",
    )
    split_seed: int = Field(0, description="Seed of the patient split.")
    cache_dir: Path | None = Field(
        None,
        description="Where the preprocessed slice cache lives (default: "
        "``<storage_path>/<name>/cache``).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError(
                "set exactly one of dataset.path (a CHAOS folder) or dataset.synthetic"
            )
        if self.synthetic is not None and self.format not in (None, "chaos"):
            raise FieldErrors(
                [
                    (
                        ("format",),
                        f"dataset.synthetic generates a CHAOS-layout dataset, not {self.format}; "
                        "write a synthetic nnU-Net dataset with `organseg data synth --format "
                        f"{self.format}` and give its folder as dataset.path",
                    )
                ]
            )
        for key in ("channel_modalities", "case_modalities", "channels"):
            if getattr(self, key) is not None and (
                self.format == "chaos" or self.synthetic is not None
            ):
                raise FieldErrors(
                    [
                        (
                            (key,),
                            f"dataset.{key} "
                            + ("combines the channels" if key == "channels" else "maps the cases")
                            + " of an nnU-Net/MSD dataset; a CHAOS dataset's folders say each "
                            "series' modality",
                        )
                    ]
                )
        if self.fold is not None and self.format in (None, "chaos"):
            raise FieldErrors(
                [
                    (
                        ("fold",),
                        "dataset.fold chooses a fold of an nnU-Net/MSD dataset's splits_final.json; "
                        "a CHAOS dataset is split by val_fraction",
                    )
                ]
            )
        return self

    @property
    def own_labels(self) -> bool:
        """True for nnU-Net and MSD datasets: the label set and modalities are the dataset's."""
        return self.format in ("nnunet", "msd")


class OptimizerConfig(_Strict):
    """The optimizer of one member."""

    name: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="``adam``, ``adamw`` or ``sgd`` (with ``momentum``)."
    )
    lr: float = Field(1e-4, gt=0.0, lt=1.0, description="Learning rate (what Ray Tune searches).")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay.")
    momentum: float = Field(
        0.9, ge=0.0, lt=1.0, description="SGD momentum (nnU-Net: 0.99); ignored by Adam/AdamW."
    )
    nesterov: bool = Field(
        False, description="SGD with Nesterov momentum (nnU-Net: true); ignored by Adam/AdamW."
    )


class SchedulerConfig(_Strict):
    """ReduceLROnPlateau on validation Dice: the seeds halve the rate after 5 epochs without progress."""

    factor: float = Field(
        0.5, gt=0.0, lt=1.0, description="Multiply the learning rate by this on a plateau."
    )
    patience: int = Field(
        5, ge=0, description="Epochs without validation-Dice progress before reducing."
    )
    min_lr: float = Field(1e-7, ge=0.0, description="Lower bound of the learning rate.")
    milestones: list[int] | None = Field(
        None,
        description=(
            "Epochs at which the rate is multiplied by factor (a step schedule, e.g. [7, 9] with factor "
            "0.1); None: reduce on plateau."
        ),
    )
    poly_exponent: float | None = Field(
        None,
        gt=0.0,
        description=(
            "Polynomial decay: the rate at epoch e is lr·(1 − e/epochs)^poly_exponent (nnU-Net: 0.9, "
            "with SGD momentum 0.99, Nesterov); None: milestones or plateau."
        ),
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> SchedulerConfig:
        if self.poly_exponent is not None and self.milestones:
            raise ValueError("set either milestones or poly_exponent, not both")
        return self


class AdversarialConfig(_Strict):
    """cGAN mode: a patch discriminator on image ⊕ mask, stepped alternately with the generator.

    Generator loss = −log D(x, G(x)) + ``lam`` · Dice loss.
    """

    enabled: bool = Field(
        False, description="Train as a cGAN generator against a PatchGAN discriminator."
    )
    lam: float = Field(
        10.0, ge=0.0, description="λ: weight of the Dice term against the adversarial term."
    )
    discriminator_lr: float = Field(
        1e-4, gt=0.0, description="Learning rate of the discriminator (Adam)."
    )


class FaultInjection(_Strict):
    """Deliberate failures for exercising fault tolerance (never set in production configs).

    ``crash_once_at_epoch`` kills the worker process once at that epoch, after Ray Train has registered
    the previous epoch's checkpoint (the restart must resume from it); ``fail_at_epoch`` raises on every
    attempt (the member must fail alone).
    """

    crash_once_at_epoch: int | None = Field(
        None, ge=0, description="Kill the worker once at this epoch (resume must follow)."
    )
    fail_at_epoch: int | None = Field(
        None, ge=0, description="Raise at this epoch on every attempt (the member fails alone)."
    )


class MemberConfig(_Strict):
    """One ensemble member: architecture, what it sees, how it trains and on what resources."""

    name: FolderName = Field(
        description="Member name: its folder in the model directory and its Serve deployment "
        "(``member-<name>``); lower-case letters, digits, ``-``, ``_``; unique in the config."
    )
    arch: str = Field(
        description="Registered architecture (architectures table above; ``organseg models list``)."
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Architecture-specific parameters (architectures table above); unknown keys "
        "are errors.",
    )
    in_channels: int = Field(
        1,
        ge=1,
        le=8,
        description="Channels the network takes; inputs are adapted to it: grey is repeated (1 → 3 "
        "for ImageNet encoders), a stacked T1 pair becomes (in, out, mean) for 3 or their mean for 1.",
    )
    encoder_weights: str | None = Field(
        None,
        description="``imagenet`` for a pretrained encoder (pretrainable members only; weights come "
        "from the Hugging Face cache), null to train from scratch.",
    )
    modalities: list[KnownModality] | None = Field(
        None, description="Modalities this member accepts (default: all of the task's)."
    )
    loss: Literal["dice", "bce", "dice_bce"] | None = Field(
        None,
        description="``dice``, ``bce`` or ``dice_bce`` (w·Dice + (1 − w)·BCE); default: the "
        "architecture's own.",
    )
    dice_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Dice share w of w·Dice + (1 − w)·BCE (what Ray Tune searches).",
    )
    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig, description="Optimizer and learning rate."
    )
    scheduler: SchedulerConfig = Field(
        default_factory=SchedulerConfig, description="ReduceLROnPlateau on validation Dice."
    )
    epochs: int = Field(60, ge=1, description="Training epochs.")
    batch_size: int = Field(4, ge=1, description="Slices per optimizer step (per worker).")
    steps_per_epoch: int | None = Field(
        None,
        ge=1,
        description="Cap on optimizer steps per epoch (None: a full pass over the training slices).",
    )
    empty_slices: bool = Field(
        True,
        description="Include slices without any organ (True keeps the data distribution honest).",
    )
    adversarial: AdversarialConfig = Field(
        default_factory=AdversarialConfig,
        description="cGAN training with a patch discriminator.",
    )
    num_workers: int = Field(
        1, ge=1, description="Data-parallel Ray Train workers for this member."
    )
    use_gpu: bool = Field(False, description="Train on GPUs.")
    gpu_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="GPU share per worker: below 1, several members share a GPU (needs "
        "``num_workers: 1``).",
    )
    cpus_per_worker: float = Field(
        1.0, gt=0.0, description="CPUs reserved per worker (also its torch thread count)."
    )
    precision: Literal["bf16", "fp16", "fp32"] | None = Field(
        None,
        description="Training precision (mixed: autocast forward, fp32 weights; fp16 adds loss "
        "scaling). Default: bf16 on GPUs that have it, else fp16 on GPU; fp32 on CPU.",
    )
    loader_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader processes preparing batches off the training thread (pinned memory "
        "on GPU). Default: cpus_per_worker − 1 on GPU (at least 1), 0 on CPU (the worker's CPUs "
        "train).",
    )
    max_failures: int = Field(
        1,
        ge=-1,
        description="Restarts from the last checkpoint after a worker failure (−1: unlimited).",
    )
    seed: int = Field(0, description="Seed of weights initialisation, data order and augmentation.")
    fault: FaultInjection | None = Field(
        None, description="Deliberate failures for fault-tolerance tests; never in real configs."
    )
    volume: VolumeConfig | None = Field(
        None,
        description=(
            "Spacing, patch, sampling and inference of a volumetric (3D) member; defaults to the "
            "architecture's recipe. Only 3D members take it."
        ),
    )
    folds: int | None = Field(
        None,
        ge=2,
        le=10,
        description=(
            "k-fold ensemble: k copies trained in parallel on the k patient folds, served as one "
            "member that averages them."
        ),
    )

    @field_validator("arch")
    @classmethod
    def _arch_is_a_segmenter(cls, value: str) -> str:
        from organseg.models import get_member_spec

        try:
            spec = get_member_spec(value)
        except ModelError as exc:  # names the valid architectures; pydantic adds the key
            raise ValueError(str(exc)) from None
        if spec.kind != "segmenter":
            raise ValueError(f"arch {value!r} is a {spec.kind}, not a segmentation member")
        return value

    @field_validator("kwargs")
    @classmethod
    def _arch_takes_kwargs(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from organseg.models import get_member_spec

        arch = info.data.get("arch")
        if arch is None:  # the arch itself is invalid and reported already
            return value
        spec = get_member_spec(arch)
        unknown = set(value) - set(spec.params)
        if unknown:
            raise ValueError(
                f"arch {arch!r} has no parameter(s) {sorted(unknown)}; it takes {spec.describe_params()}"
            )
        return value

    @model_validator(mode="after")
    def _volume_fits_the_arch(self) -> MemberConfig:
        from organseg.models import get_member_spec

        try:
            spec = get_member_spec(self.arch)
        except ModelError:  # reported by the arch validator
            return self
        if spec.dims == 3 and self.volume is None:
            defaults = {"patch": spec.patch, "spacing": spec.spacing}
            self.volume = VolumeConfig(**{k: v for k, v in defaults.items() if v is not None})
        if spec.dims == 2 and self.volume is not None:
            message = f"arch {self.arch!r} is a 2D member; volume: is for 3D members only"
            raise FieldErrors([(("volume",), message)])
        return self

    @model_validator(mode="after")
    def _gpu_share_fits(self) -> MemberConfig:
        if self.gpu_fraction < 1.0 and self.num_workers > 1:
            message = "gpu_fraction < 1 needs num_workers: 1 (NCCL rejects two workers on one GPU)"
            raise FieldErrors([(("gpu_fraction",), message)])
        return self

    @property
    def dims(self) -> int:
        """2 for slice members, 3 for volumetric ones."""
        from organseg.models import get_member_spec

        return get_member_spec(self.arch).dims

    def fold_members(self) -> list[MemberConfig]:
        """The k members of a ``folds: k`` member (``<name>-fold<i>``), or just this member."""
        if not self.folds:
            return [self]
        return [
            self.model_copy(update={"name": f"{self.name}-fold{i}", "folds": None})
            for i in range(self.folds)
        ]

    def resolved_loss(self) -> str:
        """The loss this member trains with: its own ``loss`` or its architecture's default."""
        from organseg.models import get_member_spec

        return self.loss or get_member_spec(self.arch).default_loss


class PostprocessConfig(_Strict):
    """How averaged member probabilities become a label map."""

    threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="Voxels whose mean probability reaches ``threshold`` are candidates.",
    )
    component_threshold: float | None = Field(
        0.6,
        gt=0.0,
        lt=1.0,
        description="A candidate component survives only if it holds a voxel at or above "
        "``component_threshold`` (hysteresis: the 0.5/0.6 pair of the CHAOS-winning CT ensemble). "
        "None disables it.",
    )
    largest_component: bool = Field(
        True, description="Keep only the largest 3D connected component per organ."
    )

    @model_validator(mode="after")
    def _ordered(self) -> PostprocessConfig:
        if self.component_threshold is not None and self.component_threshold < self.threshold:
            raise FieldErrors(
                [(("component_threshold",), "component_threshold must be at least threshold")]
            )
        return self


class RangeConfig(_Strict):
    """A search range: uniform, or log-uniform with ``log: true``."""

    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound.")
    log: bool = Field(False, description="Sample log-uniformly (needs low > 0).")

    @model_validator(mode="after")
    def _ordered(self) -> RangeConfig:
        problems: Problems = []
        if not self.low < self.high:
            problems.append((("high",), f"range needs low < high, got {self.low} .. {self.high}"))
        if self.log and self.low <= 0:
            problems.append((("low",), "a log-uniform range needs low > 0"))
        FieldErrors.check(problems)
        return self


class TuneConfig(_Strict):
    """Ray Tune + Optuna (TPE) + ASHA over learning rate and loss weighting."""

    members: list[str] | None = Field(None, description="Members to tune (default: all).")
    num_samples: int = Field(8, ge=1, description="Trials per member.")
    max_concurrent_trials: int = Field(
        2,
        ge=1,
        description="Trials running at once (size it to the GPUs: each trial asks for its member's "
        "resources).",
    )
    epochs: int | None = Field(
        None, ge=1, description="Epochs per trial (ASHA's max_t); default: the member's epochs."
    )
    grace_period: int = Field(
        1, ge=1, description="ASHA: epochs every trial gets before it can be stopped."
    )
    reduction_factor: int = Field(
        2, ge=2, description="ASHA: keep 1 in this many trials at each rung."
    )
    lr: RangeConfig = Field(
        default_factory=lambda: RangeConfig(low=1e-5, high=1e-3, log=True),
        description="Learning-rate range.",
    )
    dice_weight: RangeConfig | None = Field(
        default_factory=lambda: RangeConfig(low=0.2, high=1.0),
        description="Range of the Dice share w (non-adversarial members; null: not searched).",
    )
    adversarial_lam: RangeConfig | None = Field(
        None, description="λ of the adversarial term (cGAN members only)."
    )
    seed: int = Field(0, description="Seed of the Optuna sampler.")


class TrackingConfig(_Strict):
    """Where training can be watched while it runs and compared afterwards
    (docs/training-tracking.md)."""

    tensorboard: bool = Field(
        True,
        description="Write TensorBoard event files (losses, validation Dice per organ, learning rate, "
        "data-wait fraction, throughput) into every member's run folder, under ``tensorboard/``.",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking server (e.g. ``http://mlflow:5000``): one parent run per "
        "``organseg train`` or ``organseg tune`` with a child run per member or trial; null: no "
        "MLflow. ``--mlflow URI`` sets it. Needs ``pip install 'organseg[tracking]'``.",
    )
    experiment: str | None = Field(
        None, description="MLflow experiment the runs go to (default: the experiment's ``name``)."
    )


class ExperimentConfig(_Strict):
    """Top level of every training/tuning YAML under ``configs/``."""

    name: FolderName = Field(
        description="Experiment name: the folder of its runs under ``storage_path`` and of its model "
        "directory; lower-case letters, digits, ``-``, ``_``."
    )
    task: int = Field(
        2,
        description="CHAOS task 1–5: which modalities the ensemble sees and which organs it segments "
        "(CHAOS tasks table above). CHAOS datasets only: an nnU-Net or MSD dataset brings its own "
        "labels and modalities.",
    )
    storage_path: str = Field(
        "runs",
        description="Where Ray Train keeps runs and checkpoints: a local folder or any URI Ray "
        "supports (s3://, gs://).",
    )
    dataset: DatasetConfig = Field(description="Where the cases come from.")
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig,
        description="Intensity, size and channel layout of the slices; stored with every member, so "
        "serving reproduces it.",
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Training-time slice augmentation."
    )
    members: list[MemberConfig] = Field(
        min_length=1,
        description="The ensemble members (at least one), trained in parallel.",
    )
    postprocess: PostprocessConfig = Field(
        default_factory=PostprocessConfig,
        description="How averaged member probabilities become a label map.",
    )
    tune: TuneConfig | None = Field(
        None,
        description="Search space and budget of ``organseg tune`` (absent: the config cannot be "
        "tuned).",
    )
    output: Path | None = Field(
        None,
        description="Where the model directory goes (default: ``<storage_path>/<name>/model``).",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="TensorBoard event files and MLflow runs of training and tuning.",
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: int) -> int:
        if value not in CHAOS_TASKS:
            raise ValueError(unknown_task_message(value))
        return value

    @model_validator(mode="after")
    def _members_fit_the_task(self) -> ExperimentConfig:
        """Cross-field rules, every broken one reported at its member's key."""
        problems: Problems = []
        names = [m.name for m in self.members]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                problems.append(
                    (("members", i, "name"), f"member names must be unique; {name!r} repeats")
                )
        own_labels = self.dataset.own_labels
        if own_labels and "task" in self.model_fields_set:
            problems.append(
                (
                    ("task",),
                    f"task is a CHAOS task; this {self.dataset.format} dataset brings its own labels "
                    "and modalities (drop task, or use a CHAOS dataset)",
                )
            )
        task = get_task(self.task)
        stacked = self.preprocess.t1_mode == "stack"
        for i, member in enumerate(self.members):
            if member.modalities is None and not own_labels:
                member.modalities = list(task.modalities)
            # a dataset with its own labels: the members' modalities come from its channels when the
            # data are read (organseg.train.data)
            modalities = member.modalities or []
            outside = [m.value for m in modalities if m not in task.modalities]
            if outside and not own_labels:
                problems.append(
                    (
                        ("members", i, "modalities"),
                        f"member {member.name!r} accepts {outside}, which CHAOS task {self.task} "
                        f"does not include ({[m.value for m in task.modalities]})",
                    )
                )
            if stacked and Modality.MR_T1_OUT in modalities:
                problems.append(
                    (
                        ("members", i, "modalities"),
                        f"member {member.name!r} accepts MR-T1-out, but preprocess.t1_mode is "
                        "'stack': out-phase is the second channel of each MR-T1-in sample; drop "
                        "MR-T1-out (or use t1_mode: separate)",
                    )
                )
            stacked_t1 = stacked and modalities == [Modality.MR_T1_IN]
            from_data = own_labels and not modalities  # known once the dataset is read
            # a dataset's channels stacked as one input, as reading the dataset resolved them (its
            # members' modalities are then set too, and the data checked the count)
            resolved = self.preprocess.channels is not None and member.in_channels == len(
                self.preprocess.channels
            )
            if member.in_channels == 2 and not (stacked_t1 or from_data or resolved):
                problems.append(
                    (
                        ("members", i, "in_channels"),
                        f"member {member.name!r} has in_channels: 2, which only fits stacked T1 "
                        "in+out (t1_mode: stack and modalities: [MR-T1-in])",
                    )
                )
            if (
                self.preprocess.t2_channel
                and Modality.MR_T1_IN in modalities
                and member.in_channels != 3
            ):
                problems.append(
                    (
                        ("members", i, "in_channels"),
                        f"member {member.name!r} takes MR-T1-in, which preprocess.t2_channel makes "
                        f"three channels (in, out, registered T2); set in_channels: 3 (got "
                        f"{member.in_channels})",
                    )
                )
            if member.encoder_weights and member.in_channels != 3:
                problems.append(
                    (
                        ("members", i, "encoder_weights"),
                        f"member {member.name!r} loads {member.encoder_weights} encoder weights, "
                        f"which expect in_channels: 3 (got {member.in_channels}); grey slices are "
                        "repeated to 3 channels",
                    )
                )
        if self.tune and self.tune.members:
            missing = sorted(set(self.tune.members) - set(names))
            if missing:
                problems.append(
                    (
                        ("tune", "members"),
                        f"tune.members names unknown members {missing}; members are {names}",
                    )
                )
        FieldErrors.check(problems)
        return self

    # -- derived facts ---------------------------------------------------------------------------
    def member(self, name: str) -> MemberConfig:
        """The member called ``name``, or a ConfigError listing the members."""
        for m in self.members:
            if m.name == name:
                return m
        raise ConfigError(f"no member named {name!r}; members are {[m.name for m in self.members]}")

    def storage_root(self) -> str:
        """Run storage of this experiment (``<storage_path>/<name>``), as a path or URI string."""
        return self.storage_path.rstrip("/") + "/" + self.name

    def model_dir(self) -> Path:
        """Where training writes the model directory (``output`` or ``<storage_root>/model``)."""
        if self.output is not None:
            return self.output
        if is_uri(self.storage_path):
            raise ConfigError("storage_path is a URI; set output: to a local model directory")
        return Path(self.storage_root()) / "model"

    def cache_dir(self) -> Path:
        """Where the slice cache lives (``dataset.cache_dir`` or ``<storage_root>/cache``)."""
        if self.dataset.cache_dir is not None:
            return self.dataset.cache_dir
        if is_uri(self.storage_path):
            raise ConfigError(
                "storage_path is a URI; set dataset.cache_dir to a node-local or shared folder"
            )
        return Path(self.storage_root()) / "cache"


def validation_problems(error: ValidationError) -> list[tuple[str, str]]:
    """``(dotted key, message)`` of every problem in ``error``, cross-field ones at their own keys."""
    found: list[tuple[str, str]] = []
    for item in error.errors():
        loc = tuple(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, FieldErrors):
            for key, message in cause.problems:
                found.append((_dotted(loc + tuple(key)), message))
        else:
            found.append((_dotted(loc), item["msg"].removeprefix("Value error, ")))
    return found


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _format_validation_error(error: ValidationError, source: str) -> str:
    problems = validation_problems(error)
    lines = [
        f"{source}: invalid configuration ({len(problems)} problem{'s' * (len(problems) > 1)})"
    ]
    lines += [f"  {source}: {where}: {message}" for where, message in problems]
    return "\n".join(lines)


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """Make every path absolute (Ray workers run in other folders).

    Inputs (``dataset.path``) are relative to the config file, so a config and its data travel together;
    outputs (``storage_path``, ``output``, ``dataset.cache_dir``) are relative to the working directory,
    like any command's output.
    """
    cwd = Path.cwd()
    if config.dataset.path is not None and not config.dataset.path.is_absolute():
        config.dataset.path = (base / config.dataset.path).resolve()
    if config.dataset.cache_dir is not None and not config.dataset.cache_dir.is_absolute():
        config.dataset.cache_dir = (cwd / config.dataset.cache_dir).resolve()
    if config.output is not None and not config.output.is_absolute():
        config.output = (cwd / config.output).resolve()
    if not is_uri(config.storage_path) and not Path(config.storage_path).is_absolute():
        config.storage_path = str((cwd / config.storage_path).resolve())
    return config


def _with_detected_format(data: dict[str, Any], base: Path | None) -> dict[str, Any]:
    """``data`` with ``dataset.format`` set when it is absent and ``dataset.path`` is an nnU-Net or
    MSD folder (found by :func:`organseg.datasets.detect_format`); a missing folder stays unset (the
    config loads without its data; training then names the folder)."""
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or dataset.get("format") or not dataset.get("path"):
        return data
    path = Path(str(dataset["path"]))
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    from organseg.datasets.detect import detect_format

    found = detect_format(path)
    if found is None or found[0] == "chaos":
        return data
    return {**data, "dataset": {**dataset, "format": found[0]}}


def parse_config(
    data: dict[str, Any], source: str = "config", base: Path | None = None
) -> ExperimentConfig:
    """Validate a config mapping; errors become one ConfigError listing every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    data = _with_detected_format(data, base)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    return _resolve_paths(config, base) if base is not None else config


def read_yaml(path: Path, what: str = "file") -> Any:
    """A YAML file's content; a missing file or a syntax error is a ConfigError naming file and line."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML (optionally with dotted-key overrides such as ``{"name": x}``)."""
    path = Path(path)
    data = read_yaml(path, "config file")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_config(data, source=str(path), base=path.parent.resolve())


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested mappings/lists (list items by index), naming the key when it cannot."""
    keys = dotted.split(".")
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(
                    f"override {dotted!r}: {where} is not an index of a list of {len(node)}"
                )
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(
                f"override {dotted!r}: {'.'.join(keys[:depth])} is a value, not a section"
            )


def dump_config(config: ExperimentConfig) -> str:
    """YAML text that :func:`load_config` reads back to an equal config."""
    data = config.model_dump(mode="json", exclude_none=True)
    if config.dataset.own_labels:  # the dataset's labels, not a CHAOS task
        data.pop("task", None)
    return yaml.safe_dump(data, sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of an experiment YAML, for editors and ``organseg config schema``."""
    schema = ExperimentConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "organseg experiment configuration",
        **{k: v for k, v in schema.items() if k != "title"},
    }
