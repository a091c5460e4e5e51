"""Regenerate the configuration reference from the pydantic schema: docs/configuration.md's tables and
docs/experiment.schema.json (the JSON Schema editors validate experiment YAML with).

The schema is the one source: every field's meaning is its ``Field(description=...)``. Run after
changing a config model: ``python scripts/gen_config_doc.py``; ``--check`` exits 1 when either file is
stale (the test suite runs it).
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from organseg.config import ExperimentConfig, json_schema

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
SCHEMA = ROOT / "docs" / "experiment.schema.json"
CONFIGS = ROOT / "configs"
BEGIN = "<!-- BEGIN GENERATED: python scripts/gen_config_doc.py -->"
END = "<!-- END GENERATED -->"


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
def meaning(field: FieldInfo) -> str:
    """A field's ``description`` as Markdown table text."""
    return (field.description or "").replace("|", "\\|").replace("``", "`")


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
        # a dataset with its own labels has no CHAOS task: its format says where the labels come from
        task = f"{config.dataset.format} labels" if config.dataset.own_labels else config.task
        out.append(f"| `configs/{path.name}` | {task} | {members} |")
    return out


def model_table(model: type[BaseModel]) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        kind = render_type(field.annotation).replace("|", "\\|")
        limits = render_constraints(field)
        if limits:
            kind += f", {limits}"
        out.append(f"| `{name}` | {kind} | {render_default(field)} | {meaning(field)} |")
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
        doc = model.__doc__
        if not doc:
            raise SystemExit(f"{model.__name__} has no docstring; add one")
        out.append(" ".join(doc.split()).replace("``", "`"))
        out.append("")
        out += [*model_table(model), ""]
    out.append(END)
    return "\n".join(out)


def updated_doc(text: str) -> str:
    """``text`` (docs/configuration.md) with its generated block rebuilt from the schema."""
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + generated_block() + text[stop:]


def schema_text() -> str:
    """The JSON Schema file for editors, as written to :data:`SCHEMA`."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    wanted = {DOC: updated_doc(DOC.read_text()), SCHEMA: schema_text()}
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date; run python scripts/gen_config_doc.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"rewrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
