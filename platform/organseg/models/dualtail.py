"""DualTail-Net: an ELU encoder whose max-pooling indices drive two independent unpooling decoders.

No library offers this architecture, so it is written here. Max-unpooling puts decoder activations back
at the exact positions the encoder's maxima came from, which keeps organ boundaries sharp without
learned upsampling; the two tails see the same encoder and their logits are fused by a learned 1×1
convolution (initialised to their average).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.errors import ModelError
from organseg.models.registry import register_member


def elu_block(in_ch: int, out_ch: int, n_convs: int = 2, batch_norm: bool = True) -> nn.Sequential:
    """``n_convs`` × (3×3 conv, optional batch norm, ELU)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ELU(inplace=True))
    return nn.Sequential(*layers)


class _Tail(nn.Module):
    """One decoder: unpool with the encoder's indices, concatenate its features, convolve."""

    def __init__(self, widths: list[int], classes: int, batch_norm: bool) -> None:
        super().__init__()
        # Level i receives the unpooled map (widths[i] channels) and the skip (widths[i] channels)
        # and hands widths[i-1] channels down, so the next unpooling matches its indices' channels.
        outs = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(
            elu_block(2 * w, o, batch_norm=batch_norm) for w, o in zip(widths, outs, strict=True)
        )
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(
        self, x: torch.Tensor, skips: list[torch.Tensor], indices: list[torch.Tensor]
    ) -> torch.Tensor:
        for level in reversed(range(len(self.blocks))):
            skip = skips[level]
            x = F.max_unpool2d(x, indices[level], 2, 2, output_size=skip.shape[-2:])
            x = self.blocks[level](torch.cat([x, skip], dim=1))
        return self.head(x)


class DualTailNet(nn.Module):
    """Encoder of ELU conv blocks + pooling with indices, two unpooling tails, fused logits."""

    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 32,
        depth: int = 5,
        max_channels: int = 512,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ModelError(
                f"dualtail: depth and base_channels must be >= 1, got {depth}, {base_channels}"
            )
        widths = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        self.encoder = nn.ModuleList(
            elu_block(in_channels if i == 0 else widths[i - 1], w, batch_norm=batch_norm)
            for i, w in enumerate(widths)
        )
        self.bottleneck = elu_block(widths[-1], widths[-1], batch_norm=batch_norm)
        self.tails = nn.ModuleList(_Tail(widths, classes, batch_norm) for _ in range(2))
        self.fuse = nn.Conv2d(2 * classes, classes, 1)
        with torch.no_grad():  # start as the average of the two tails
            eye = torch.eye(classes).view(classes, classes, 1, 1) / 2
            self.fuse.weight.copy_(torch.cat([eye, eye], dim=1))
            self.fuse.bias.zero_()
        self.depth = depth

    def forward_tails(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two tails' logits before fusion (for deep supervision or inspection)."""
        skips, indices = [], []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(idx)
        x = self.bottleneck(x)
        a, b = (tail(x, skips, indices) for tail in self.tails)
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(self.forward_tails(x), dim=1))


@register_member(
    "dualtail",
    description="DualTail-Net: ELU encoder, two max-unpooling decoder tails, fused (from scratch)",
    default_loss="dice",
    recommended_in_channels=1,
)
def build_dualtail(
    in_channels: int,
    classes: int,
    base_channels: int = 32,
    depth: int = 5,
    max_channels: int = 512,
    batch_norm: bool = True,
) -> nn.Module:
    """DualTail-Net; ``base_channels`` scales every width (the tests use a narrow one)."""
    return DualTailNet(in_channels, classes, base_channels, depth, max_channels, batch_norm)
