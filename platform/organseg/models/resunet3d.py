"""3D residual U-Net of the pixel-shuffle CHAOS entry (``resunet3d_ps``).

Full pre-activation residual encoder of depth 3 (3, 4 and 6 blocks; 16 channels doubling per level),
GroupNorm with 4 groups, LeakyReLU 0.2; each decoder scale upsamples with a convolution to eight times the
channels and a 3D pixel shuffle, gates the skip with an attention gate, and applies two convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from organseg.errors import ModelError
from organseg.models.blocks3d import (
    AttentionGate3d,
    PixelShuffle3d,
    PreActResBlock3d,
    check_divisible_3d,
    norm3d,
)
from organseg.models.registry import register_member


def _gn_conv(in_ch: int, out_ch: int, groups: int, slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False),
        norm3d("group", out_ch, groups),
        nn.LeakyReLU(slope, inplace=True),
    )


class ResUNet3DPS(nn.Module):
    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 16,
        blocks: tuple[int, ...] = (3, 4, 6),
        groups: int = 4,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        if len(blocks) < 2 or min(blocks) < 1:
            raise ModelError(f"resunet3d_ps: blocks needs >= 2 levels of >= 1 block, got {blocks}")
        widths = [base_channels * 2**i for i in range(len(blocks))]
        self.divisor = 2 ** (len(blocks) - 1)
        self.stem = nn.Conv3d(in_channels, widths[0], 3, padding=1, bias=False)
        self.levels = nn.ModuleList()
        for i, count in enumerate(blocks):
            in_ch = widths[0] if i == 0 else widths[i - 1]
            layers = [
                PreActResBlock3d(in_ch, widths[i], 1 if i == 0 else 2, "group", groups, slope)
            ]
            layers += [
                PreActResBlock3d(widths[i], widths[i], 1, "group", groups, slope)
                for _ in range(count - 1)
            ]
            self.levels.append(nn.Sequential(*layers))
        self.bottom = nn.Sequential(norm3d("group", widths[-1], groups), nn.LeakyReLU(slope))
        self.upsample = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(len(blocks) - 2, -1, -1):
            self.upsample.append(
                nn.Sequential(
                    nn.Conv3d(widths[i + 1], widths[i] * 8, 1, bias=False), PixelShuffle3d(2)
                )
            )
            self.gates.append(AttentionGate3d(widths[i], widths[i], max(widths[i] // 2, 1)))
            self.decoder.append(
                nn.Sequential(
                    _gn_conv(2 * widths[i], widths[i], groups, slope),
                    _gn_conv(widths[i], widths[i], groups, slope),
                )
            )
        self.head = nn.Conv3d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible_3d(x, self.divisor, "resunet3d_ps")
        x = self.stem(x)
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
        x = self.bottom(skips.pop())
        for up, gate, block in zip(self.upsample, self.gates, self.decoder, strict=True):
            x = up(x)
            skip = gate(skips.pop(), x)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


@register_member(
    "resunet3d_ps",
    description="3D pre-activation residual U-Net (3/4/6 blocks, GN4), 3D pixel-shuffle up, attention gates",
    default_loss="dice",
    dims=3,
    patch=(64, 192, 192),
    spacing=(1.4, 1.4, 2.0),
)
def build_resunet3d_ps(
    in_channels: int,
    classes: int,
    base_channels: int = 16,
    blocks: tuple[int, ...] = (3, 4, 6),
    groups: int = 4,
) -> nn.Module:
    return ResUNet3DPS(in_channels, classes, base_channels, tuple(blocks), groups)
