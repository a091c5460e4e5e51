"""docs/configuration.md lists every key of the experiment schema, generated from the pydantic models.

The reference tables sit between two markers in the doc and are rebuilt from the models on every test
run: a field added, renamed or re-defaulted without regenerating the doc fails here. Regenerate with
``python tests/configs/test_configuration_doc.py``. Meanings come from each field's ``#:`` comment in
its source (or its ``description``), else from :data:`MEANINGS` below; a field with neither fails.
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from organseg.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
CONFIGS = ROOT / "configs"
BEGIN = "<!-- BEGIN GENERATED: python tests/configs/test_configuration_doc.py -->"
END = "<!-- END GENERATED -->"

#: Meanings of fields whose source has no ``#:`` comment or description, keyed ``Model.field``.
MEANINGS: dict[str, str] = {
    "ExperimentConfig.name": "Experiment name: the folder of its runs under `storage_path` and of its "
    "model directory; lower-case letters, digits, `-`, `_`.",
    "ExperimentConfig.task": "CHAOS task 1–5: which modalities the ensemble sees and which organs "
    "it segments (CHAOS tasks table above).",
    "ExperimentConfig.dataset": "Where the cases come from.",
    "ExperimentConfig.preprocess": "Intensity, size and channel layout of the slices; stored with "
    "every member, so serving reproduces it.",
    "ExperimentConfig.augment": "Training-time slice augmentation.",
    "ExperimentConfig.members": "The ensemble members (at least one), trained in parallel.",
    "ExperimentConfig.postprocess": "How averaged member probabilities become a label map.",
    "ExperimentConfig.tune": "Search space and budget of `organseg tune` (absent: the config "
    "cannot be tuned).",
    "DatasetConfig.path": "A CHAOS folder (holding `Train_Sets/CT`, `Train_Sets/MR`); relative "
    "to the config file. Checked when training starts, not when the config loads.",
    "DatasetConfig.synthetic": "Generate a synthetic CHAOS-layout dataset instead (exactly one of "
    "`path` and `synthetic`).",
    "DatasetConfig.val_fraction": "Share of patients held out for validation (split by patient, "
    "CT and MR patients separately).",
    "DatasetConfig.split_seed": "Seed of the patient split.",
    "SyntheticDataConfig.ct": "Number of CT patients.",
    "SyntheticDataConfig.mr": "Number of MR patients (each with T1-DUAL in/out and T2-SPIR).",
    "SyntheticDataConfig.size": "In-plane size of the generated slices (pixels).",
    "SyntheticDataConfig.slices": "Slices per volume (default: the generator's own).",
    "SyntheticDataConfig.seed": "Seed of the generator: same seed, same dataset.",
    "AugmentConfig.enabled": "Augment training slices at all.",
    "AugmentConfig.scale": "Range of the random zoom factor.",
    "AugmentConfig.rotation_deg": "Maximum rotation either way, in degrees.",
    "AugmentConfig.shear_deg": "Maximum shear either way, in degrees.",
    "AugmentConfig.elastic_alpha": "RMS displacement of the elastic field (pixels at 256²).",
    "AugmentConfig.elastic_sigma": "Smoothness of the elastic field (pixels at 256²).",
    "AugmentConfig.noise_std": "Range the noise's standard deviation is drawn from.",
    "AugmentConfig.intensity_scale": "Range of the intensity factor.",
    "AugmentConfig.intensity_shift": "Maximum intensity offset either way.",
    "AugmentConfig.histogram_points": "Nodes of the random monotone intensity remap.",
    "MemberConfig.name": "Member name: its folder in the model directory and its Serve deployment "
    "(`member-<name>`); lower-case letters, digits, `-`, `_`; unique in the config.",
    "MemberConfig.arch": "Registered architecture (architectures table above; `organseg models list`).",
    "MemberConfig.kwargs": "Architecture-specific parameters (architectures table above); unknown keys are errors.",
    "MemberConfig.in_channels": "Channels the network takes; inputs are adapted to it: grey is "
    "repeated (1 → 3 for ImageNet encoders), a stacked T1 pair becomes (in, out, mean) for 3 or "
    "their mean for 1.",
    "MemberConfig.encoder_weights": "`imagenet` for a pretrained encoder (pretrainable members "
    "only; weights come from the Hugging Face cache), null to train from scratch.",
    "MemberConfig.loss": "`dice`, `bce` or `dice_bce` (w·Dice + (1 − w)·BCE); default: the "
    "architecture's own.",
    "MemberConfig.optimizer": "Optimizer and learning rate.",
    "MemberConfig.scheduler": "ReduceLROnPlateau on validation Dice.",
    "MemberConfig.epochs": "Training epochs.",
    "MemberConfig.batch_size": "Slices per optimizer step (per worker).",
    "MemberConfig.adversarial": "cGAN training with a patch discriminator.",
    "MemberConfig.num_workers": "Data-parallel Ray Train workers for this member.",
    "MemberConfig.use_gpu": "Train on GPUs.",
    "MemberConfig.gpu_fraction": "GPU share per worker: below 1, several members share a GPU "
    "(needs `num_workers: 1`).",
    "MemberConfig.cpus_per_worker": "CPUs reserved per worker (also its torch thread count).",
    "MemberConfig.max_failures": "Restarts from the last checkpoint after a worker failure (−1: "
    "unlimited).",
    "MemberConfig.seed": "Seed of weights initialisation, data order and augmentation.",
    "MemberConfig.fault": "Deliberate failures for fault-tolerance tests; never in real configs.",
    "OptimizerConfig.name": "`adam`, `adamw` or `sgd` (momentum 0.9).",
    "OptimizerConfig.lr": "Learning rate (what Ray Tune searches).",
    "OptimizerConfig.weight_decay": "Weight decay.",
    "SchedulerConfig.factor": "Multiply the learning rate by this on a plateau.",
    "SchedulerConfig.patience": "Epochs without validation-Dice progress before reducing.",
    "SchedulerConfig.min_lr": "Lower bound of the learning rate.",
    "AdversarialConfig.enabled": "Train as a cGAN generator against a PatchGAN discriminator.",
    "AdversarialConfig.lam": "λ: weight of the Dice term against the adversarial term.",
    "AdversarialConfig.discriminator_lr": "Learning rate of the discriminator (Adam).",
    "FaultInjection.crash_once_at_epoch": "Kill the worker once at this epoch (resume must follow).",
    "FaultInjection.fail_at_epoch": "Raise at this epoch on every attempt (the member fails alone).",
    "RangeConfig.low": "Lower bound.",
    "RangeConfig.high": "Upper bound.",
    "RangeConfig.log": "Sample log-uniformly (needs low > 0).",
    "TuneConfig.num_samples": "Trials per member.",
    "TuneConfig.max_concurrent_trials": "Trials running at once (size it to the GPUs: each trial "
    "asks for its member's resources).",
    "TuneConfig.grace_period": "ASHA: epochs every trial gets before it can be stopped.",
    "TuneConfig.reduction_factor": "ASHA: keep 1 in this many trials at each rung.",
    "TuneConfig.lr": "Learning-rate range.",
    "TuneConfig.dice_weight": "Range of the Dice share w (non-adversarial members; null: not "
    "searched).",
    "TuneConfig.seed": "Seed of the Optuna sampler.",
    "AppArgs.model_dir": "Model directory written by `organseg train`; on a cluster, a path every "
    "node mounts at the same place.",
    "AppArgs.max_request_mb": "Largest accepted request body (MiB).",
    "AppArgs.max_voxels": "Largest accepted volume (voxels).",
}


#: One-line summaries of models without a docstring.
SUMMARIES: dict[str, str] = {
    "OptimizerConfig": "The optimizer of one member.",
    "RangeConfig": "A search range: uniform, or log-uniform with `log: true`.",
}


# -- collecting the models --------------------------------------------------------------------------
def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found += _models_in(arg)
    return found


def schema_sections() -> list[tuple[type[BaseModel], list[str]]]:
    """Every model reachable from ExperimentConfig, depth first, with the key paths that use it."""
    paths: dict[type[BaseModel], list[str]] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        paths.setdefault(model, []).append(path or "(top level)")
        for name, field in model.model_fields.items():
            is_list = get_origin(_strip_optional(field.annotation)) is list
            child_path = (f"{path}.{name}" if path else name) + ("[]" if is_list else "")
            for child in _models_in(field.annotation):
                visit(child, child_path)

    visit(ExperimentConfig, "")
    return list(paths.items())


def all_keys() -> list[str]:
    """Dotted key of every field, e.g. ``members[].optimizer.lr``."""
    keys = []
    for model, paths in schema_sections():
        for path in paths:
            prefix = "" if path == "(top level)" else path + "."
            keys += [prefix + name for name in model.model_fields]
    return keys


# -- meanings ---------------------------------------------------------------------------------------
def _comment_meanings(model: type[BaseModel]) -> dict[str, str]:
    """``#:`` comments right above each field in the class source."""
    source = textwrap.dedent(inspect.getsource(model))
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].strip())
                row -= 1
            if comment:
                found[node.target.id] = " ".join(comment)
    return found


def meaning(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    text = (
        _comment_meanings(model).get(name)
        or field.description
        or MEANINGS.get(f"{model.__name__}.{name}", "")
    )
    return text.replace("|", "\\|").replace("``", "`")


# -- rendering --------------------------------------------------------------------------------------
def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def render_type(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        parts = [render_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " / ".join(f"`{v}`" for v in args)
    if origin is typing.Annotated:
        return render_type(args[0])
    if origin is list:
        return f"list of {render_type(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(render_type(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    if annotation is Any:
        return "any"
    if inspect.isclass(annotation):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{anchor(annotation)})"
        if issubclass(annotation, enum.Enum):
            return " / ".join(f"`{m.value}`" for m in annotation if m.value != "unknown")
        if issubclass(annotation, Path):
            return "path"
        return annotation.__name__
    return str(annotation)


def render_constraints(field: FieldInfo) -> str:
    signs = {
        annotated_types.Ge: ("≥", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("≤", "le"),
        annotated_types.Lt: ("<", "lt"),
    }
    parts = []
    for item in field.metadata:
        for kind, (sign, attr) in signs.items():
            if isinstance(item, kind):
                bound = getattr(item, attr)
                parts.append(f"{sign} {bound:g}" if isinstance(bound, float) else f"{sign} {bound}")
        if isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def render_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel) and not value.model_fields_set:
        return "its defaults"
    text = yaml.safe_dump(
        _plain(value), default_flow_style=True, sort_keys=False, width=1000
    ).strip()
    return f"`{text.removesuffix('...').strip()}`"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def tasks_table() -> list[str]:
    from organseg.tasks import CHAOS_TASKS

    out = ["| task | title | modalities | organs |", "|---|---|---|---|"]
    for task in CHAOS_TASKS.values():
        modalities = ", ".join(f"`{m.value}`" for m in task.modalities)
        out.append(f"| {task.number} | {task.title} | {modalities} | {', '.join(task.organs)} |")
    return out


def architectures_table() -> list[str]:
    from organseg.models import list_members

    out = [
        "| `arch` | what it is | channels (usual) | default `loss` | `encoder_weights: imagenet` | `kwargs` |",
        "|---|---|---|---|---|---|",
    ]
    for spec in list_members("segmenter"):
        out.append(
            f"| `{spec.name}` | {_cell(spec.description)} | {spec.recommended_in_channels} | "
            f"`{spec.default_loss}` | {'yes' if spec.pretrainable else 'no'} | "
            f"{_cell(spec.describe_params())} |"
        )
    return out


def configs_table() -> list[str]:
    from organseg.config import load_config

    out = ["| file | task | members: `name` (arch; modalities) |", "|---|---|---|"]
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = load_config(path)
        members = "; ".join(
            f"`{m.name}` ({m.arch}; {', '.join(x.value for x in m.modalities or [])})"
            for m in config.members
        )
        out.append(f"| `configs/{path.name}` | {config.task} | {members} |")
    return out


def model_table(model: type[BaseModel]) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = render_type(field.annotation).replace("|", "\\|")
        limits = render_constraints(field)
        if limits:
            kind += f", {limits}"
        out.append(
            f"| `{name}` | {kind} | {render_default(field)} | {meaning(model, name, field)} |"
        )
    return out


def serve_args_table() -> list[str]:
    from organseg.serve.app import AppArgs

    return model_table(AppArgs)


def generated_block() -> str:
    out = [BEGIN, "", "## Tasks, architectures, configs, Serve args", ""]
    out += ["### CHAOS tasks", "", *tasks_table(), ""]
    out += ["### Architectures (`arch`)", "", *architectures_table(), ""]
    out += ["### Shipped configs", "", *configs_table(), ""]
    out += ["### Serve application `args` (`organseg.serve.app:build_app`)", ""]
    out += [*serve_args_table(), ""]
    out += ["## Reference: every key", ""]
    for model, paths in schema_sections():
        where = ", ".join(f"`{p}`" if p != "(top level)" else p for p in paths)
        out.append(f'<a id="{anchor(model)}"></a>')
        out.append(f"### {model.__name__}: {where}")
        out.append("")
        # the class's own docstring only (getdoc would inherit BaseModel's)
        doc = model.__doc__ or SUMMARIES.get(model.__name__, "")
        assert doc, f"{model.__name__} has no docstring; add one or a SUMMARIES entry"
        out.append(" ".join(doc.split()).replace("``", "`"))
        out.append("")
        out += [*model_table(model), ""]
    out.append(END)
    return "\n".join(out)


def rewrite_doc() -> None:
    text = DOC.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + generated_block() + text[stop:])


# -- tests ------------------------------------------------------------------------------------------
def test_every_field_has_a_meaning() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model, _ in schema_sections()
        for name, field in model.model_fields.items()
        if not meaning(model, name, field)
    ]
    assert not missing, (
        f"fields without a meaning (add a #: comment or a MEANINGS entry): {missing}"
    )


def test_doc_lists_every_key() -> None:
    """Each model's section names where it sits and has one table row per field."""
    sections = {}
    for chunk in DOC.read_text().split('<a id="')[1:]:
        key, _, body = chunk.partition('"></a>')
        sections[key] = body
    for model, paths in schema_sections():
        section = sections.get(anchor(model))
        assert section is not None, f"{DOC.name} has no section for {model.__name__}"
        heading = section.strip().splitlines()[0]
        for path in paths:
            assert (f"`{path}`" if path != "(top level)" else path) in heading
        for name in model.model_fields:
            assert re.search(rf"^\| `{re.escape(name)}` \|", section, re.M), (
                f"{model.__name__}.{name} is missing from {DOC.name}"
            )


def test_doc_tables_match_the_schema() -> None:
    text = DOC.read_text()
    assert BEGIN in text, f"{DOC.name} lost its generated-section markers"
    assert END in text, f"{DOC.name} lost its generated-section markers"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == generated_block(), (
        f"{DOC.name} is out of date with the schema; run python tests/configs/test_configuration_doc.py"
    )


def test_keys_cover_nested_sections() -> None:
    keys = all_keys()
    for key in ("name", "dataset.synthetic.ct", "members[].optimizer.lr", "members[].adversarial.lam",
                "tune.adversarial_lam.log", "preprocess.t1_mode", "postprocess.component_threshold"):  # fmt: skip
        assert key in keys


if __name__ == "__main__":
    rewrite_doc()
    print(f"rewrote the generated tables of {DOC}", file=sys.stderr)
