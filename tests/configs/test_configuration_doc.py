"""docs/configuration.md lists every key of the experiment schema, generated from the pydantic models.

The reference tables sit between two markers in the doc and docs/experiment.schema.json is the schema's
JSON Schema; both are rebuilt by ``scripts/gen_config_doc.py`` from each field's ``description``. A field
added, renamed or re-defaulted without regenerating fails here, and so does a field without a meaning.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from organseg.config import ExperimentConfig, json_schema

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_doc.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_doc", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


gen = _generator()


def test_every_field_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model, _ in gen.schema_sections()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, f"fields without Field(description=...): {missing}"


def test_serve_args_have_descriptions() -> None:
    from organseg.serve.app import AppArgs

    assert all(f.description for f in AppArgs.model_fields.values())


def test_doc_lists_every_key() -> None:
    """Each model's section names where it sits and has one table row per field."""
    sections = {}
    for chunk in gen.DOC.read_text().split('<a id="')[1:]:
        key, _, body = chunk.partition('"></a>')
        sections[key] = body
    for model, paths in gen.schema_sections():
        section = sections.get(gen.anchor(model))
        assert section is not None, f"{gen.DOC.name} has no section for {model.__name__}"
        heading = section.strip().splitlines()[0]
        for path in paths:
            assert (f"`{path}`" if path != "(top level)" else path) in heading
        for name, field in model.model_fields.items():
            row = re.search(rf"^\| `{re.escape(name)}` \|.*$", section, re.M)
            assert row, f"{model.__name__}.{name} is missing from {gen.DOC.name}"
            assert gen.meaning(field) in row.group(0)


def test_generated_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_keys_cover_nested_sections() -> None:
    keys = gen.all_keys()
    for key in ("name", "dataset.synthetic.ct", "members[].optimizer.lr", "members[].adversarial.lam",
                "tune.adversarial_lam.log", "preprocess.t1_mode", "postprocess.component_threshold"):  # fmt: skip
        assert key in keys


def test_json_schema_accepts_the_shipped_configs_and_rejects_typos() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        errors = [e.message for e in validator.iter_errors(data)]
        assert not errors, f"{path.name}: {errors}"
    bad = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    bad["members"][0]["epoch"] = 3  # misspelt key
    bad["members"][0]["modalities"] = ["unknown"]
    assert len(list(validator.iter_errors(bad))) == 2
    assert json.loads((ROOT / "docs" / "experiment.schema.json").read_text()) == schema
    assert schema["properties"]["name"]["description"] == (
        ExperimentConfig.model_fields["name"].description
    )
