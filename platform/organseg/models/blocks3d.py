"""Building blocks of the volumetric members: pre-activation residual blocks, 3D pixel shuffle, gates.

PyTorch has ``nn.PixelShuffle`` for 2D only and MONAI's ``SubpixelUpsample`` adds its own convolution and
initialisation around the shuffle; the recipe wants the bare rearrangement after the decoder's
convolution, so :class:`PixelShuffle3d` is written here (a view and a permute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.errors import ModelError


class PixelShuffle3d(nn.Module):
    """``(N, C·8, D, H, W)`` → ``(N, C, 2D, 2H, 2W)``: eight maps become one at twice the resolution."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        r = self.scale
        if c % r**3:
            raise ModelError(f"PixelShuffle3d: {c} channels are not a multiple of {r**3}")
        out = c // r**3
        x = x.reshape(n, out, r, r, r, d, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(n, out, d * r, h * r, w * r)


class AttentionGate3d(nn.Module):
    """Additive attention on a skip: ``skip · σ(ψ(relu(θ·skip + φ·up(gate))))`` (one weight per voxel)."""

    def __init__(self, skip_ch: int, gate_ch: int, inter_ch: int) -> None:
        super().__init__()
        self.theta = nn.Conv3d(skip_ch, inter_ch, 1, bias=False)
        self.phi = nn.Conv3d(gate_ch, inter_ch, 1)
        self.psi = nn.Conv3d(inter_ch, 1, 1)

    def coefficients(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = self.phi(gate)
        if g.shape[2:] != skip.shape[2:]:
            g = F.interpolate(g, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.theta(skip) + g)))

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip * self.coefficients(skip, gate)


def norm3d(kind: str, channels: int, groups: int = 4) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(groups, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    raise ModelError(f"unknown norm {kind!r} (group, instance)")


class PreActResBlock3d(nn.Module):
    """Full pre-activation residual block: (norm → act → conv) ×2 plus the identity (or a 1×1 projection).

    ``stride`` 2 downsamples in the first convolution (the projection then strides too).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        norm: str = "group",
        groups: int = 4,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.norm1 = norm3d(norm, in_ch, groups)
        self.conv1 = nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm3d(norm, out_ch, groups)
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.act = nn.LeakyReLU(slope, inplace=False)
        self.project = (
            nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        out = self.conv2(self.act(self.norm2(self.conv1(pre))))
        return out + self.project(pre if not isinstance(self.project, nn.Identity) else x)


def conv_norm_act(
    in_ch: int, out_ch: int, stride: int = 1, norm: str = "instance", slope: float = 0.01
) -> nn.Sequential:
    """3×3×3 convolution → norm → LeakyReLU (nnU-Net's unit)."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        norm3d(norm, out_ch),
        nn.LeakyReLU(slope, inplace=True),
    )


def check_divisible_3d(x: torch.Tensor, divisor: int, name: str) -> None:
    """A clear error instead of a shape mismatch deep in the decoder."""
    bad = [s for s in x.shape[2:] if s % divisor]
    if bad:
        raise ModelError(
            f"{name}: input {tuple(x.shape[2:])} must be divisible by {divisor} on every axis "
            "(set the member's volume.patch accordingly)"
        )
