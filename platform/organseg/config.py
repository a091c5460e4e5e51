"""The experiment configuration: one YAML file validated by pydantic.

An experiment names its data, its CHAOS task, its preprocessing and its ensemble members; ``organseg
train``, ``organseg tune`` and the quickstart all read this one schema. Every model forbids unknown keys,
so a typo is an error naming the key, not a silently ignored setting. Relative paths resolve against the
config file's folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from organseg.errors import ConfigError
from organseg.io.volume import Modality
from organseg.preprocess.augment import AugmentConfig
from organseg.preprocess.config import PreprocessConfig
from organseg.tasks import get_task

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticDataConfig(_Strict):
    """A synthetic CHAOS-layout dataset generated on first use (tests, demos, the quickstart)."""

    ct: int = Field(4, ge=0)
    mr: int = Field(0, ge=0)
    size: int = Field(64, ge=32)
    slices: int | None = Field(None, ge=4)
    seed: int = 0


class DatasetConfig(_Strict):
    """Where the cases come from and how patients are split into training and validation."""

    path: Path | None = None
    synthetic: SyntheticDataConfig | None = None
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 0
    #: Where the preprocessed slice cache lives (default: ``<storage_path>/<name>/cache``).
    cache_dir: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError(
                "set exactly one of dataset.path (a CHAOS folder) or dataset.synthetic"
            )
        return self


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)


class SchedulerConfig(_Strict):
    """ReduceLROnPlateau on validation Dice: the seeds halve the rate after 5 epochs without progress."""

    factor: float = Field(0.5, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=0)
    min_lr: float = Field(1e-7, ge=0.0)


class AdversarialConfig(_Strict):
    """cGAN mode: a patch discriminator on image ⊕ mask, stepped alternately with the generator.

    Generator loss = −log D(x, G(x)) + ``lam`` · Dice loss.
    """

    enabled: bool = False
    lam: float = Field(10.0, ge=0.0)
    discriminator_lr: float = Field(1e-4, gt=0.0)


class FaultInjection(_Strict):
    """Deliberate failures for exercising fault tolerance (never set in production configs).

    ``crash_once_at_epoch`` kills the worker process once at that epoch (the restart must resume from the
    last checkpoint); ``fail_at_epoch`` raises on every attempt (the member must fail alone).
    """

    crash_once_at_epoch: int | None = Field(None, ge=0)
    fail_at_epoch: int | None = Field(None, ge=0)


class MemberConfig(_Strict):
    """One ensemble member: architecture, what it sees, how it trains and on what resources."""

    name: str
    arch: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    in_channels: int = Field(1, ge=1, le=8)
    encoder_weights: str | None = None
    #: Modalities this member accepts (default: all of the task's).
    modalities: list[Modality] | None = None
    loss: Literal["dice", "bce", "dice_bce"] | None = None
    #: Dice share w of w·Dice + (1 − w)·BCE (what Ray Tune searches).
    dice_weight: float = Field(0.5, ge=0.0, le=1.0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(4, ge=1)
    #: Cap on optimizer steps per epoch (None: a full pass over the training slices).
    steps_per_epoch: int | None = Field(None, ge=1)
    #: Include slices without any organ (True keeps the data distribution honest).
    empty_slices: bool = True
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    gpu_fraction: float = Field(1.0, gt=0.0, le=1.0)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    max_failures: int = Field(1, ge=-1)
    seed: int = 0
    fault: FaultInjection | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"member name {value!r} must be lower-case letters, digits, '-' or '_'"
            )
        return value

    @field_validator("modalities", mode="before")
    @classmethod
    def _parse_modalities(cls, value: Any) -> Any:
        if value is None:
            return None
        return [Modality.parse(v) for v in value]

    @model_validator(mode="after")
    def _arch_exists(self) -> MemberConfig:
        from organseg.models import get_member_spec

        spec = get_member_spec(self.arch)  # raises ModelError listing valid names
        if spec.kind != "segmenter":
            raise ValueError(f"arch {self.arch!r} is a {spec.kind}, not a segmentation member")
        unknown = set(self.kwargs) - set(spec.params)
        if unknown:
            raise ValueError(
                f"arch {self.arch!r} has no parameter(s) {sorted(unknown)}; it takes {spec.describe_params()}"
            )
        if self.gpu_fraction < 1.0 and self.num_workers > 1:
            raise ValueError(
                "gpu_fraction < 1 needs num_workers: 1 (NCCL rejects two workers on one GPU)"
            )
        return self

    def resolved_loss(self) -> str:
        from organseg.models import get_member_spec

        return self.loss or get_member_spec(self.arch).default_loss


class PostprocessConfig(_Strict):
    """How averaged member probabilities become a label map."""

    #: Voxels whose mean probability reaches ``threshold`` are candidates.
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    #: A candidate component survives only if it holds a voxel at or above ``component_threshold``
    #: (hysteresis: the 0.5/0.6 pair of the CHAOS-winning CT ensemble). None disables it.
    component_threshold: float | None = Field(0.6, gt=0.0, lt=1.0)
    #: Keep only the largest 3D connected component per organ.
    largest_component: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> PostprocessConfig:
        if self.component_threshold is not None and self.component_threshold < self.threshold:
            raise ValueError("component_threshold must be at least threshold")
        return self


class RangeConfig(_Strict):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeConfig:
        if not self.low < self.high:
            raise ValueError(f"range needs low < high, got {self.low} .. {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log-uniform range needs low > 0")
        return self


class TuneConfig(_Strict):
    """Ray Tune + Optuna (TPE) + ASHA over learning rate and loss weighting."""

    #: Members to tune (default: all).
    members: list[str] | None = None
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    #: Epochs per trial (ASHA's max_t); default: the member's epochs.
    epochs: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: int = Field(2, ge=2)
    lr: RangeConfig = Field(default_factory=lambda: RangeConfig(low=1e-5, high=1e-3, log=True))
    dice_weight: RangeConfig | None = Field(default_factory=lambda: RangeConfig(low=0.2, high=1.0))
    #: λ of the adversarial term (cGAN members only).
    adversarial_lam: RangeConfig | None = None
    seed: int = 0


class ExperimentConfig(_Strict):
    """Top level of every training/tuning YAML under ``configs/``."""

    name: str
    task: int = 2
    #: Where Ray Train keeps runs and checkpoints: a local folder or any URI Ray supports (s3://, gs://).
    storage_path: str = "runs"
    dataset: DatasetConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    members: list[MemberConfig] = Field(min_length=1)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    tune: TuneConfig | None = None
    #: Where the model directory goes (default: ``<storage_path>/<name>/model``).
    output: Path | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"experiment name {value!r} must be lower-case letters, digits, '-' or '_'"
            )
        return value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: int) -> int:
        get_task(value)
        return value

    @model_validator(mode="after")
    def _members_fit_the_task(self) -> ExperimentConfig:
        names = [m.name for m in self.members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"member names must be unique; repeated: {duplicates}")
        task = get_task(self.task)
        for member in self.members:
            if member.modalities is None:
                member.modalities = list(task.modalities)
            outside = [m.value for m in member.modalities if m not in task.modalities]
            if outside:
                raise ValueError(
                    f"member {member.name!r} accepts {outside}, which CHAOS task {self.task} does not include "
                    f"({[m.value for m in task.modalities]})"
                )
        stacked = self.preprocess.t1_mode == "stack"
        for member in self.members:
            modalities = member.modalities or []
            if stacked and Modality.MR_T1_OUT in modalities:
                raise ValueError(
                    f"member {member.name!r} accepts MR-T1-out, but preprocess.t1_mode is 'stack': out-phase is "
                    "the second channel of each MR-T1-in sample; drop MR-T1-out (or use t1_mode: separate)"
                )
            if member.in_channels == 2 and not (stacked and modalities == [Modality.MR_T1_IN]):
                raise ValueError(
                    f"member {member.name!r} has in_channels: 2, which only fits stacked T1 in+out "
                    "(t1_mode: stack and modalities: [MR-T1-in])"
                )
            if member.encoder_weights and member.in_channels != 3:
                raise ValueError(
                    f"member {member.name!r} loads {member.encoder_weights} encoder weights, which expect "
                    f"in_channels: 3 (got {member.in_channels}); grey slices are repeated to 3 channels"
                )
        if self.tune and self.tune.members:
            missing = sorted(set(self.tune.members) - set(names))
            if missing:
                raise ValueError(
                    f"tune.members names unknown members {missing}; members are {names}"
                )
        return self

    # -- derived facts ---------------------------------------------------------------------------
    def organs_for(self, member: MemberConfig) -> tuple[str, ...]:
        return get_task(self.task).organs_for(member.modalities or [])

    def member(self, name: str) -> MemberConfig:
        for m in self.members:
            if m.name == name:
                return m
        raise ConfigError(f"no member named {name!r}; members are {[m.name for m in self.members]}")

    def storage_root(self) -> str:
        """Run storage of this experiment (``<storage_path>/<name>``), as a path or URI string."""
        return self.storage_path.rstrip("/") + "/" + self.name

    def model_dir(self) -> Path:
        if self.output is not None:
            return self.output
        if "://" in self.storage_path:
            raise ConfigError("storage_path is a URI; set output: to a local model directory")
        return Path(self.storage_root()) / "model"

    def cache_dir(self) -> Path:
        if self.dataset.cache_dir is not None:
            return self.dataset.cache_dir
        if "://" in self.storage_path:
            raise ConfigError(
                "storage_path is a URI; set dataset.cache_dir to a node-local or shared folder"
            )
        return Path(self.storage_root()) / "cache"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
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
    if "://" not in config.storage_path and not Path(config.storage_path).is_absolute():
        config.storage_path = str((cwd / config.storage_path).resolve())
    return config


def parse_config(
    data: dict[str, Any], source: str = "config", base: Path | None = None
) -> ExperimentConfig:
    """Validate a config mapping; errors become a ConfigError listing every bad key."""
    from organseg.errors import ModelError

    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    except ModelError as exc:
        raise ConfigError(f"{source}: {exc}") from None
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
    return yaml.safe_dump(data, sort_keys=False)
