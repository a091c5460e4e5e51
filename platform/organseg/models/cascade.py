"""Cascade: two registered members stacked and trained end to end with auto-context.

Stage one ends linear (its logits); that map is normalised to [0, 1] and concatenated to the image as
extra input channels of stage two, so stage two refines stage one with the image still in view.
Gradients flow through the normalisation into stage one, and :meth:`Cascade.forward_stages` exposes
both stages' logits so the trainer can supervise each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from organseg.errors import ModelError
from organseg.models.registry import get_member_spec, member_names, register_member

ContextNorm = Literal["minmax", "sigmoid"]


def normalize_context(logits: torch.Tensor, mode: ContextNorm, eps: float = 1e-6) -> torch.Tensor:
    """Map stage-one logits to [0, 1]: per-sample, per-channel min-max, or the sigmoid."""
    if mode == "sigmoid":
        return torch.sigmoid(logits)
    flat = logits.flatten(2)
    lo = flat.amin(-1)[..., None, None]
    hi = flat.amax(-1)[..., None, None]
    return (logits - lo) / (hi - lo + eps)


class Cascade(nn.Module):
    """``stage2(image ⊕ normalize(stage1(image)))``."""

    def __init__(self, stage1: nn.Module, stage2: nn.Module, context: ContextNorm) -> None:
        super().__init__()
        self.stage1 = stage1
        self.stage2 = stage2
        self.context = context

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both stages' logits (N×classes×H×W each) for deep supervision."""
        first = self.stage1(x)
        second = self.stage2(torch.cat([x, normalize_context(first, self.context)], dim=1))
        return first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[1]


@register_member(
    "cascade",
    description="Two stacked members trained end to end with auto-context (default 2× v19unet)",
    pretrainable=True,
    recommended_in_channels=3,
)
def build_cascade(
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
    stages: Sequence[str] = ("v19unet", "v19unet"),
    stage1_kwargs: Mapping[str, Any] | None = None,
    stage2_kwargs: Mapping[str, Any] | None = None,
    context: ContextNorm = "minmax",
) -> nn.Module:
    """Stage two gets ``in_channels + classes`` inputs; ``encoder_weights`` goes to the stages that
    are pretrainable and is ignored by from-scratch stages."""
    from organseg.models.registry import create_member

    segmenters = member_names("segmenter")
    if isinstance(stages, str) or len(stages) != 2:
        raise ModelError(f"cascade: stages must name two members, got {stages!r}")
    for stage in stages:
        if stage not in segmenters:
            raise ModelError(f"cascade: stage {stage!r} is not a segmenter; valid: {segmenters}")
    if context not in ("minmax", "sigmoid"):
        raise ModelError(f"cascade: context must be 'minmax' or 'sigmoid', got {context!r}")
    built = []
    for stage, ch, extra in zip(
        stages, (in_channels, in_channels + classes), (stage1_kwargs, stage2_kwargs), strict=True
    ):
        weights = encoder_weights if get_member_spec(stage).pretrainable else None
        built.append(
            create_member(stage, ch, classes, encoder_weights=weights, **dict(extra or {}))
        )
    return Cascade(built[0], built[1], context)
