"""IRE3D-Net: imitating encoder, prior (shape) encoder, joint decoder and a U-Net module.

The prior encoder and the joint decoder form an autoencoder of the ground truth, which learns a compact
shape code; the imitating encoder learns to produce that code from the image (L1 imitation loss); the
U-Net module segments the image together with the decoded shape prior (Dice), kept close to that prior
by a shape-consistency L1 term weighted λ = 0.001. As in the seed each loss is optimised over its own
parameters only (:meth:`IRE3DNet.loss_terms`, consumed by :func:`organseg.train.steps.partitioned_step`).
At inference the prior encoder is dropped: ``forward`` uses the imitating encoder's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from organseg.models.blocks3d import check_divisible_3d, conv_norm_act
from organseg.models.registry import register_member
from organseg.models.unet3d import UNet3D


def _encoder(in_ch: int, width: int, levels: int, latent: int) -> nn.Sequential:
    layers: list[nn.Module] = [conv_norm_act(in_ch, width)]
    for i in range(levels):
        layers.append(conv_norm_act(width * 2**i, width * 2 ** (i + 1), stride=2))
    layers.append(nn.Conv3d(width * 2**levels, latent, 1))
    return nn.Sequential(*layers)


def _decoder(latent: int, width: int, levels: int, classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [conv_norm_act(latent, width * 2**levels)]
    for i in range(levels, 0, -1):
        layers += [
            nn.ConvTranspose3d(width * 2**i, width * 2 ** (i - 1), 2, stride=2, bias=False),
            conv_norm_act(width * 2 ** (i - 1), width * 2 ** (i - 1)),
        ]
    layers.append(nn.Conv3d(width, classes, 1))
    return nn.Sequential(*layers)


class IRE3DNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        classes: int,
        base_channels: int = 16,
        levels: int = 3,
        latent_channels: int = 32,
        shape_weight: float = 0.001,
    ) -> None:
        super().__init__()
        self.divisor = 2**levels
        self.shape_weight = shape_weight
        self.imitating = _encoder(in_channels, base_channels, levels, latent_channels)
        self.prior = _encoder(classes, base_channels, levels, latent_channels)
        self.decoder = _decoder(latent_channels, base_channels, levels, classes)
        self.unet = UNet3D(in_channels + classes, classes, base_channels, levels + 1,
                           deep_supervision=False)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible_3d(x, self.divisor, "ire3d")
        prior = torch.sigmoid(self.decoder(self.imitating(x)))
        return self.unet(torch.cat([x, prior], dim=1))

    def loss_terms(
        self, x: torch.Tensor, y: torch.Tensor, seg_loss: nn.Module
    ) -> list[tuple[str, torch.Tensor, list[nn.Parameter]]]:
        """``(name, loss, the parameters it optimises)`` for the seed's separate optimisation:

        - ``shape``: Dice of the ground-truth autoencoder (prior encoder + joint decoder);
        - ``imitation``: L1 between the imitating and the (fixed) prior code (imitating encoder);
        - ``segmentation``: Dice of the U-Net output plus λ·L1 shape consistency with the decoded prior
          (U-Net module).
        """
        check_divisible_3d(x, self.divisor, "ire3d")
        code = self.prior(y)
        shape = seg_loss(self.decoder(code), y)
        imitated = self.imitating(x)
        imitation = F.l1_loss(imitated, code.detach())
        prior = torch.sigmoid(self.decoder(imitated)).detach()
        logits = self.unet(torch.cat([x, prior], dim=1))
        consistency = F.l1_loss(torch.sigmoid(logits), prior)
        segmentation = seg_loss(logits, y) + self.shape_weight * consistency
        return [
            ("shape", shape, [*self.prior.parameters(), *self.decoder.parameters()]),
            ("imitation", imitation, list(self.imitating.parameters())),
            ("segmentation", segmentation, list(self.unet.parameters())),
        ]


@register_member(
    "ire3d",
    description="IRE3D-Net: imitating + prior encoders, joint decoder, U-Net module; losses on own params",
    default_loss="dice",
    dims=3,
    patch=(96, 128, 128),
    spacing=(3.0, 3.0, 3.0),
)
def build_ire3d(
    in_channels: int,
    classes: int,
    base_channels: int = 16,
    levels: int = 3,
    latent_channels: int = 32,
    shape_weight: float = 0.001,
) -> nn.Module:
    return IRE3DNet(in_channels, classes, base_channels, levels, latent_channels, shape_weight)
