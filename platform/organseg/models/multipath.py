"""Multi-path U-Net: one encoder path per MR modality, skips summed into one shared decoder.

Each input channel is one modality (e.g. T1-in, T1-out, T2). Summing the paths' features, instead of
concatenating them, lets the network run with any subset of modalities: an absent one is a black
input whose path contributes nothing. Modality dropout trains exactly that case by dropping whole
paths per sample (never all of a sample's paths). No library offers this, so it is written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.errors import ModelError
from organseg.models.registry import register_member


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def drop_modalities(
    present: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Drop each present path with probability ``p``, keeping at least one present path per sample."""
    rand = torch.rand(present.shape, device=present.device, generator=generator)
    keep = present & (rand >= p)
    # where everything was dropped, restore one randomly chosen present path
    choice = torch.rand(present.shape, device=present.device, generator=generator)
    choice = choice.masked_fill(~present, -1.0).argmax(dim=1)
    restore = F.one_hot(choice, present.shape[1]).bool() & present
    return torch.where(keep.any(dim=1, keepdim=True), keep, restore)


class MultiPathUNet(nn.Module):
    """``in_channels`` single-channel encoder paths → summed skips → shared U-Net decoder."""

    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 32,
        depth: int = 4,
        modality_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if not 0.0 <= modality_dropout < 1.0:
            raise ModelError(
                f"multipath: modality_dropout must be in [0, 1), got {modality_dropout}"
            )
        if depth < 1:
            raise ModelError(f"multipath: depth must be >= 1, got {depth}")
        self.modality_dropout = modality_dropout
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.paths = nn.ModuleList(
            nn.ModuleList(
                conv_block(1 if i == 0 else widths[i - 1], widths[i]) for i in range(depth)
            )
            for _ in range(in_channels)
        )
        self.bottleneck = conv_block(widths[depth - 1], widths[depth])
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
        )
        self.decoder = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def present_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """N×paths bool: a path whose channel is entirely zero (black) counts as absent."""
        return x.flatten(2).abs().amax(dim=-1) > 0

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; ``present`` (N×paths bool) marks available modalities, default: non-black inputs."""
        if x.shape[1] != len(self.paths):
            raise ValueError(
                f"multipath expects {len(self.paths)} modality channels, got {x.shape[1]}"
            )
        if present is None:
            present = self.present_from_input(x)
        present = present.to(device=x.device, dtype=torch.bool)
        if self.training and self.modality_dropout > 0:
            present = drop_modalities(present, self.modality_dropout)
        mask = present.to(x.dtype)[:, :, None, None]  # N×P×1×1
        depth = len(self.ups)
        skips: list[torch.Tensor | int] = [0] * depth
        bottom: torch.Tensor | int = 0
        for p, path in enumerate(self.paths):
            m = mask[:, p : p + 1]
            h = x[:, p : p + 1] * m  # absent modality = black input ...
            for level, block in enumerate(path):
                h = block(h)
                skips[level] = skips[level] + h * m  # ... and its path adds nothing
                h = F.max_pool2d(h, 2)
            bottom = bottom + h * m
        h = self.bottleneck(bottom)
        for level in reversed(range(depth)):
            h = self.decoder[level](torch.cat([self.ups[level](h), skips[level]], dim=1))
        return self.head(h)


@register_member(
    "multipath",
    description="Multi-path U-Net: one encoder per MR modality, summed skips, modality dropout",
    recommended_in_channels=3,
)
def build_multipath(
    in_channels: int,
    classes: int,
    base_channels: int = 32,
    depth: int = 4,
    modality_dropout: float = 0.25,
) -> nn.Module:
    """``in_channels`` = number of modality paths (one channel each)."""
    return MultiPathUNet(in_channels, classes, base_channels, depth, modality_dropout)
