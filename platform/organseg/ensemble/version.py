"""The version of a model directory: what produced an answer, and what a live switch changes.

A version is the content hash of ``ensemble.yaml``, every member's weights and the modality classifier
(so a retrained or edited model directory always gets a new one, and copies of the same model the same
one), shown together with the experiment name and creation time of the directory.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from organseg.ensemble.spec import SPEC_FILE, load_spec


@dataclass(frozen=True)
class ModelVersion:
    id: str  # "<name>:<hash12>", what answers carry as ``model_version``
    sha256: str
    name: str
    created: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@functools.lru_cache(maxsize=16)
def _hash(files: tuple[tuple[str, float, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_version(model_dir: Path | str) -> ModelVersion:
    """Hash ``ensemble.yaml`` and the weights (cached per file size and modification time)."""
    model_dir = Path(model_dir)
    spec = load_spec(model_dir)
    paths = [
        model_dir / SPEC_FILE,
        *(model_dir / m.weights for m in sorted(spec.members, key=lambda m: m.name)),
        # the classifier decides which ensemble answers a headerless volume
        *([model_dir / spec.modality_classifier.file] if spec.modality_classifier else []),
    ]
    stamps = tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in paths)
    sha = _hash(stamps)
    return ModelVersion(
        id=f"{spec.name}:{sha[:12]}", sha256=sha, name=spec.name, created=spec.created
    )
