"""Attention U-Net (Oktay et al.) with PReLU activations.

Additive attention gates weight every skip connection by a map computed from the skip and the coarser
decoder signal, so irrelevant neighbouring anatomy is suppressed before concatenation. smp only offers
channel/scSE attention, not these gates, so the network is written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.errors import ModelError
from organseg.models.registry import register_member


def prelu_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.PReLU(out_ch),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.PReLU(out_ch),
    )


class AttentionGate(nn.Module):
    """``skip * sigmoid(psi(relu(Wx·skip + Wg·up(gate))))`` — additive attention on a skip."""

    def __init__(self, skip_ch: int, gate_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_ch, inter_ch, 1, bias=False)
        self.phi = nn.Conv2d(gate_ch, inter_ch, 1)
        self.psi = nn.Conv2d(inter_ch, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = F.interpolate(
            self.phi(gate), size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(skip) + g)))
        return skip * alpha


class AttentionUNet(nn.Module):
    """U-Net whose skips pass through :class:`AttentionGate`; PReLU everywhere."""

    def __init__(
        self, in_channels: int, classes: int, base_channels: int = 32, depth: int = 4
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ModelError(f"attention_unet: depth must be >= 1, got {depth}")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            prelu_block(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth)
        )
        self.bottleneck = prelu_block(widths[depth - 1], widths[depth])
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i + 1], max(widths[i] // 2, 1)) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
        )
        self.decoder = nn.ModuleList(prelu_block(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for level in reversed(range(len(skips))):
            gated = self.gates[level](skips[level], x)
            x = self.decoder[level](torch.cat([self.ups[level](x), gated], dim=1))
        return self.head(x)


@register_member(
    "attention_unet",
    description="Attention-gated U-Net with PReLU activations (from scratch)",
    recommended_in_channels=1,
)
def build_attention_unet(
    in_channels: int, classes: int, base_channels: int = 32, depth: int = 4
) -> nn.Module:
    """Attention U-Net; ``base_channels`` scales all widths."""
    return AttentionUNet(in_channels, classes, base_channels, depth)
