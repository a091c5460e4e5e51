"""The locate→crop 3D cascade (``cascade3d``): NET1 finds the organ on the whole volume, NET2 segments
the region its mask (plus a margin) crops.

Both networks: a pre-activation residual block per encoder level, stride-2 convolutions instead of
pooling, instance normalisation, and as output the sum of every decoder level's logits upsampled by
nearest neighbour. NET1 (5 levels, 4 channels at the first) sees the whole volume at the member's coarse
spacing (the recipe: 1.2×1.2×4.8 mm, 64×384×384); NET2 (6 levels, 32 channels) sees the crop resampled
to ``crop_size``; its logits are resampled back and replace NET1's inside the box. While NET1 finds
nothing (early training) the box is the whole volume. Both stages are supervised
(:meth:`Cascade3D.forward_stages`, as the trainer does for the 2D cascade).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.models.blocks3d import PreActResBlock3d, check_divisible_3d
from organseg.models.registry import register_member


class SumDecoderNet3d(nn.Module):
    """Residual encoder with stride-2 convolutions; decoder levels' logits summed at full resolution."""

    def __init__(self, in_channels: int, classes: int, levels: int, base_channels: int) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(levels)]
        self.divisor = 2 ** (levels - 1)
        self.stem = nn.Conv3d(in_channels, widths[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(
            nn.Conv3d(widths[i - 1], widths[i], 3, stride=2, padding=1, bias=False)
            for i in range(1, levels)
        )
        self.encoder = nn.ModuleList(
            PreActResBlock3d(w, w, norm="instance", slope=0.01) for w in widths
        )
        self.lateral = nn.ModuleList(
            nn.Conv3d(widths[i + 1], widths[i], 1, bias=False) for i in range(levels - 1)
        )
        self.decoder = nn.ModuleList(
            PreActResBlock3d(widths[i], widths[i], norm="instance", slope=0.01)
            for i in range(levels - 1)
        )
        self.heads = nn.ModuleList(nn.Conv3d(w, classes, 1) for w in widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        x = self.encoder[0](self.stem(x))
        skips = [x]
        for down, block in zip(self.down, self.encoder[1:], strict=True):
            x = block(down(x))
            skips.append(x)
        out = F.interpolate(self.heads[-1](x), size=size, mode="nearest")
        for i in range(len(skips) - 2, -1, -1):
            up = F.interpolate(self.lateral[i](x), size=skips[i].shape[2:], mode="nearest")
            x = self.decoder[i](up + skips[i])
            out = out + F.interpolate(self.heads[i](x), size=size, mode="nearest")
        return out


class Cascade3D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        classes: int,
        net1_levels: int = 5,
        net1_channels: int = 4,
        net2_levels: int = 6,
        net2_channels: int = 32,
        crop_size: tuple[int, int, int] = (64, 192, 192),
        margin: float = 0.15,
    ) -> None:
        super().__init__()
        self.net1 = SumDecoderNet3d(in_channels, classes, net1_levels, net1_channels)
        self.net2 = SumDecoderNet3d(in_channels, classes, net2_levels, net2_channels)
        self.crop_size = tuple(int(c) for c in crop_size)
        self.margin = margin
        self.divisor = self.net1.divisor

    def box(self, located: torch.Tensor) -> tuple[slice, slice, slice]:
        """The bounding box (with a relative margin) of voxels any batch item places an organ in."""
        shape = located.shape[2:]
        full = tuple(slice(0, n) for n in shape)
        if located.is_meta:
            return full  # shapes only (models list): no data to locate with
        mask = (located > 0).any(dim=0).any(dim=0)
        if not bool(mask.any()):
            return full
        box = []
        for axis, n in enumerate(shape):
            other = tuple(a for a in range(3) if a != axis)
            hits = torch.nonzero(mask.any(dim=other)).flatten()
            lo, hi = int(hits.min()), int(hits.max()) + 1
            pad = max(1, round((hi - lo) * self.margin))
            box.append(slice(max(0, lo - pad), min(n, hi + pad)))
        return tuple(box)  # type: ignore[return-value]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_divisible_3d(x, self.divisor, "cascade3d")
        first = self.net1(x)
        z, y, w = self.box(first.detach())
        crop = x[:, :, z, y, w]
        size = crop.shape[2:]
        resized = F.interpolate(crop, size=self.crop_size, mode="trilinear", align_corners=False)
        second = F.interpolate(self.net2(resized), size=size, mode="trilinear", align_corners=False)
        out = first.clone()
        out[:, :, z, y, w] = second
        return first, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[1]


@register_member(
    "cascade3d",
    description="3D locate→crop cascade: NET1 (5 levels, 4 ch) on the whole volume, NET2 (6 levels, 32 ch) on the crop",
    default_loss="dice",
    dims=3,
    patch=(64, 384, 384),
    spacing=(1.2, 1.2, 4.8),
)
def build_cascade3d(
    in_channels: int,
    classes: int,
    net1_levels: int = 5,
    net1_channels: int = 4,
    net2_levels: int = 6,
    net2_channels: int = 32,
    crop_size: tuple[int, int, int] = (64, 192, 192),
    margin: float = 0.15,
) -> nn.Module:
    return Cascade3D(
        in_channels, classes, net1_levels, net1_channels, net2_levels, net2_channels,
        tuple(crop_size), margin,
    )  # fmt: skip
