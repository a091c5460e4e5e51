"""nnU-Net-style 3D U-Net (``3d_fullres``): instance norm, LeakyReLU, stride-2 convolutions, deep supervision.

Written here rather than taken from MONAI's ``DynUNet`` so that the registry's builder signature, the
deep-supervision contract (a list of logits in training mode, one tensor in eval mode) and the
divisibility error match the other members; the architecture is nnU-Net's plain convolutional U-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from organseg.errors import ModelError
from organseg.models.blocks3d import check_divisible_3d, conv_norm_act
from organseg.models.registry import register_member


class UNet3D(nn.Module):
    """Encoder of ``depth`` stages (two conv-IN-LReLU units, the first strided from stage 2 on),
    transposed-convolution decoder; in training mode also returns lower-resolution deep-supervision logits.
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 32,
        depth: int = 5,
        max_channels: int = 320,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ModelError(f"unet3d_fullres: depth must be >= 2, got {depth}")
        widths = [min(base_channels * 2**i, max_channels) for i in range(depth)]
        self.divisor = 2 ** (depth - 1)
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList()
        for i, width in enumerate(widths):
            in_ch = in_channels if i == 0 else widths[i - 1]
            self.encoder.append(
                nn.Sequential(
                    conv_norm_act(in_ch, width, stride=1 if i == 0 else 2),
                    conv_norm_act(width, width),
                )
            )
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(depth - 2, -1, -1):
            self.up.append(nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2, bias=False))
            self.decoder.append(
                nn.Sequential(
                    conv_norm_act(2 * widths[i], widths[i]), conv_norm_act(widths[i], widths[i])
                )
            )
            if deep_supervision or i == 0:  # without deep supervision only the full-resolution head
                self.heads.append(nn.Conv3d(widths[i], classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_divisible_3d(x, self.divisor, "unet3d_fullres")
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        deep = self.training and self.deep_supervision
        outputs = []
        for level, (up, block) in enumerate(zip(self.up, self.decoder, strict=True)):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            if deep:
                outputs.append(self.heads[level](x))
        if deep:
            return outputs[::-1]  # full resolution first, then each coarser decoder level
        return self.heads[-1](x)


@register_member(
    "unet3d_fullres",
    description="nnU-Net 3d_fullres: 3D U-Net, instance norm, LeakyReLU, stride-2 convs, deep supervision",
    default_loss="dice_bce",
    dims=3,
    patch=(80, 160, 160),
    spacing=(1.5, 1.5, 2.5),
)
def build_unet3d_fullres(
    in_channels: int,
    classes: int,
    base_channels: int = 32,
    depth: int = 5,
    max_channels: int = 320,
    deep_supervision: bool = True,
) -> nn.Module:
    return UNet3D(in_channels, classes, base_channels, depth, max_channels, deep_supervision)
