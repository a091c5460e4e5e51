"""Parameter counts and forward GFLOPs of members, as printed by ``organseg models list``.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add of
convolutions and matrix products). The model is built and run on the ``meta`` device, which carries
shapes but no data, so summarising even the 512×512 cascade takes well under a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from organseg.models.registry import MemberSpec, create_member, list_members
from organseg.organs import ORGAN_NAMES


@dataclass(frozen=True)
class MemberSummary:
    """One row of ``organseg models list``."""

    name: str
    kind: str
    description: str
    in_channels: int
    classes: int
    parameters: int
    gflops: float
    size: int
    default_loss: str
    pretrainable: bool
    smp_backed: bool
    params: str
    #: 2 (slices, GFLOPs at size²) or 3 (volumes, GFLOPs at the recipe's patch).
    dims: int = 2
    patch: tuple[int, int, int] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_gflops(
    model: nn.Module, in_channels: int, size: int = 512, patch: tuple[int, ...] | None = None
) -> float:
    """Forward GFLOPs of one ``in_channels``×``size``×``size`` input (a 3D member: one ``patch``), in eval
    mode."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    try:
        shape = tuple(patch) if patch is not None else (size, size)
        x = torch.zeros(1, in_channels, *shape, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def member_io(spec: MemberSpec, classes: int) -> tuple[int, int]:
    """Input and output channels a summary uses: discriminators see image ⊕ masks, emit 1 logit."""
    if spec.kind == "discriminator":
        return spec.recommended_in_channels, 1
    return spec.recommended_in_channels, classes


def summarize_member(
    spec: MemberSpec, size: int = 512, classes: int | None = None
) -> MemberSummary:
    """Build ``spec`` on the meta device and count its parameters and FLOPs at ``size``×``size``."""
    classes = len(ORGAN_NAMES) if classes is None else classes
    in_ch, out_ch = member_io(spec, classes)
    with torch.device("meta"):
        model = create_member(spec.name, in_ch, out_ch)
        gflops = count_gflops(model, in_ch, size, spec.patch if spec.dims == 3 else None)
    return MemberSummary(
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        in_channels=in_ch,
        classes=out_ch,
        parameters=count_parameters(model),
        gflops=gflops,
        size=size,
        default_loss=spec.default_loss,
        pretrainable=spec.pretrainable,
        smp_backed=spec.smp_backed,
        params=spec.describe_params(),
        dims=spec.dims,
        patch=spec.patch if spec.dims == 3 else None,
    )


def summarize_members(size: int = 512, classes: int | None = None) -> list[MemberSummary]:
    """:func:`summarize_member` for every registered member."""
    return [summarize_member(spec, size, classes) for spec in list_members()]
