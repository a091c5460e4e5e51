"""The cGAN patch discriminator for adversarial training: it judges image ⊕ mask pairs.

Five 4×4 convolutions (strides 2, 2, 2, 1, 1) with LeakyReLU(0.2) and batch norm on the middle three,
as in pix2pix's 70×70 PatchGAN; each output logit scores one receptive-field patch as real (the
ground-truth mask) or fake (a segmenter's prediction). Written here because smp has no discriminator.
"""

from __future__ import annotations

from torch import nn

from organseg.models.registry import register_member


class PatchDiscriminator(nn.Sequential):
    """N×(image+mask channels)×H×W → N×classes×h×w patch logits."""

    def __init__(self, in_channels: int, classes: int = 1, base_channels: int = 64) -> None:
        b = base_channels
        widths = [b, 2 * b, 4 * b, 8 * b]
        strides = [2, 2, 2, 1]
        layers: list[nn.Module] = []
        ch = in_channels
        for i, (w, s) in enumerate(zip(widths, strides, strict=True)):
            layers.append(nn.Conv2d(ch, w, 4, stride=s, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch = w
        layers.append(nn.Conv2d(ch, classes, 4, stride=1, padding=1))
        super().__init__(*layers)


@register_member(
    "patch_discriminator",
    description="cGAN PatchGAN discriminator on image ⊕ mask (adversarial mode)",
    kind="discriminator",
    default_loss="bce",
    recommended_in_channels=5,
)
def build_patch_discriminator(
    in_channels: int, classes: int = 1, base_channels: int = 64
) -> nn.Module:
    """``in_channels`` = image channels + segmentation classes; ``classes`` = 1 logit per patch."""
    return PatchDiscriminator(in_channels, classes, base_channels)
