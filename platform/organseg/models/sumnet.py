"""SUMNet: a VGG11-BN encoder (smp, so ImageNet weights load the usual way) whose five max-poolings keep
their indices, and a decoder that max-unpools with them and concatenates the encoder features.

smp has no unpooling decoder, so the decoder is written here; the encoder's layers are smp's (and thus
torchvision's) VGG11-BN, only run layer by layer so each pooling can return its indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.models.registry import register_member
from organseg.models.smp_members import check_divisible, smp_encoder


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(True),
    ]


class SUMNet(nn.Module):
    """VGG11-BN encoder with pooling indices + unpooling/concatenation decoder."""

    def __init__(self, encoder: nn.Module, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        features = encoder.features
        # channel count of the feature map entering each pooling (= the skip at that level)
        widths: list[int] = []
        ch = 0
        for layer in features:
            if isinstance(layer, nn.Conv2d):
                ch = layer.out_channels
            elif isinstance(layer, nn.MaxPool2d):
                widths.append(ch)
        self.widths = widths
        blocks = []
        for level, w in enumerate(widths):
            out = widths[level - 1] if level > 0 else widths[0]
            blocks.append(nn.Sequential(*_conv_bn_relu(2 * w, w), *_conv_bn_relu(w, out)))
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x)
        skips, indices = [], []
        for layer in self.encoder.features:
            if isinstance(layer, nn.MaxPool2d):
                skips.append(x)
                x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
                indices.append(idx)
            else:
                x = layer(x)
        for level in reversed(range(len(skips))):
            x = F.max_unpool2d(x, indices[level], 2, 2, output_size=skips[level].shape[-2:])
            x = self.decoder[level](torch.cat([x, skips[level]], dim=1))
        return self.head(x)


@register_member(
    "sumnet",
    description="SUMNet: VGG11-BN encoder, max-unpooling + concatenation decoder",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_sumnet(in_channels: int, classes: int, encoder_weights: str | None = None) -> nn.Module:
    """SUMNet on smp's VGG11-BN encoder (ImageNet weights optional)."""
    return SUMNet(smp_encoder("sumnet", "vgg11_bn", in_channels, encoder_weights), classes)
