"""What one member's training run needs on every worker: :class:`TrainPayload`.

Its own module so that the trainer core and the data sources both take it without importing each
other. It carries the validated config objects themselves (validated once, where the run is planned):
a worker reads ``payload.member.lr``, it never re-validates dicts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from organseg.config import MemberConfig
from organseg.preprocess.config import AugmentConfig, PreprocessConfig


class TrainPayload(BaseModel):
    """Everything a worker needs (it travels to every Ray worker, pickled whole)."""

    model_config = ConfigDict(extra="forbid")

    member: MemberConfig
    organs: list[str]
    preprocess: PreprocessConfig
    augment: AugmentConfig
    cache_dir: str
    train_ids: list[str]
    val_ids: list[str]
    fault_dir: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
