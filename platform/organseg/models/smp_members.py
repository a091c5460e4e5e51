"""Thin members on segmentation-models-pytorch encoders: TernausNet, LinkNet-34, ResNet/SE-ResNet U-Nets
and the VGG19 U-Net with a symmetric decoder (v19UNet, or v19pUNet with ImageNet weights).

smp's U-Net decoder upsamples by nearest interpolation and uses conv+BN+ReLU. The seed teams' decoders
upsample with stride-2 transposed convolutions followed by conv+ReLU, which smp does not offer, so
:class:`TransposedUnetDecoder` provides it (``decoder="transposed"``) on the same smp encoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from organseg.errors import ModelError
from organseg.models.pretrained import load_with_pretrained
from organseg.models.registry import register_member

DecoderName = Literal["smp", "transposed"]
#: VGG19's five conv blocks have 2, 2, 4, 4, 4 convolutions; the symmetric decoder mirrors them.
V19_DECODER_CHANNELS = (512, 512, 256, 128, 64)
V19_DECODER_CONVS = (4, 4, 4, 2, 2)


def smp_encoder(member: str, encoder: str, in_channels: int, weights: str | None) -> nn.Module:
    """An smp encoder of depth 5 (features at strides 1..32), weights loaded by smp itself."""
    from segmentation_models_pytorch.encoders import get_encoder

    return load_with_pretrained(
        member,
        encoder,
        weights,
        lambda w: get_encoder(encoder, in_channels=in_channels, depth=5, weights=w),
    )


def check_divisible(x: torch.Tensor, factor: int = 32) -> None:
    """Reject inputs the five pooling stages cannot halve cleanly, with the size to pad to."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"input height and width must be divisible by {factor}, got {h}x{w}; pad to "
            f"{-(-h // factor) * factor}x{-(-w // factor) * factor}"
        )


class _UpBlock(nn.Module):
    """Stride-2 transposed convolution + ReLU, concatenation with the skip, then conv+ReLU layers."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, n_convs: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2), nn.ReLU(True))
        layers: list[nn.Module] = []
        ch = out_ch + skip_ch
        for _ in range(n_convs):
            layers += [nn.Conv2d(ch, out_ch, 3, padding=1), nn.ReLU(True)]
            ch = out_ch
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class TransposedUnetDecoder(nn.Module):
    """U-Net decoder over an smp encoder's six feature maps (strides 1, 2, ..., 32).

    ``full_res_skip`` also concatenates the stride-1 feature map: VGG encoders produce learned
    full-resolution features there (TernausNet and v19UNet use them), ResNets just pass the input on.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        convs_per_block: Sequence[int],
        full_res_skip: bool,
    ) -> None:
        super().__init__()
        if not len(decoder_channels) == len(convs_per_block) == len(encoder_channels) - 1:
            raise ModelError(
                f"decoder_channels and convs_per_block need {len(encoder_channels) - 1} entries, "
                f"got {list(decoder_channels)} and {list(convs_per_block)}"
            )
        self.full_res_skip = full_res_skip
        skips = list(encoder_channels[:-1])[::-1]  # strides 16, 8, 4, 2, 1
        if not full_res_skip:
            skips[-1] = 0
        in_chs = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            _UpBlock(i, s, o, n)
            for i, s, o, n in zip(in_chs, skips, decoder_channels, convs_per_block, strict=True)
        )
        self.out_channels = decoder_channels[-1]
        # He initialisation as smp's decoders get; without batch norm the PyTorch default
        # (scaled for linear layers) lets activations shrink through the ReLU stack.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        skips: list[torch.Tensor | None] = list(features[:-1])[::-1]
        if not self.full_res_skip:
            skips[-1] = None
        x = features[-1]
        for block, skip in zip(self.blocks, skips, strict=True):
            x = block(x, skip)
        return x


class EncoderDecoder(nn.Module):
    """smp encoder + :class:`TransposedUnetDecoder` + 1×1 head producing logits."""

    def __init__(self, encoder: nn.Module, decoder: TransposedUnetDecoder, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = nn.Conv2d(decoder.out_channels, classes, 1)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x)
        return self.head(self.decoder(self.encoder(x)))


def _unet(
    member: str,
    encoder: str,
    in_channels: int,
    classes: int,
    encoder_weights: str | None,
    decoder: str,
    decoder_channels: Sequence[int],
    full_res_skip: bool,
) -> nn.Module:
    if decoder == "smp":
        import segmentation_models_pytorch as smp

        return load_with_pretrained(
            member,
            encoder,
            encoder_weights,
            lambda w: smp.Unet(
                encoder_name=encoder,
                encoder_weights=w,
                in_channels=in_channels,
                classes=classes,
                decoder_channels=tuple(decoder_channels),
            ),
        )
    if decoder == "transposed":
        enc = smp_encoder(member, encoder, in_channels, encoder_weights)
        dec = TransposedUnetDecoder(
            enc.out_channels, decoder_channels, [2] * len(decoder_channels), full_res_skip
        )
        return EncoderDecoder(enc, dec, classes)
    raise ModelError(f"member {member!r}: decoder must be 'smp' or 'transposed', got {decoder!r}")


@register_member(
    "ternausnet",
    description="TernausNet: U-Net on a VGG11 encoder, transposed-conv decoder",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_ternausnet(
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
    decoder: DecoderName = "transposed",
    decoder_channels: Sequence[int] = (256, 256, 128, 64, 32),
) -> nn.Module:
    """TernausNet's own decoder is transposed-conv, so that is the default here."""
    return _unet(
        "ternausnet",
        "vgg11",
        in_channels,
        classes,
        encoder_weights,
        decoder,
        decoder_channels,
        full_res_skip=True,
    )


@register_member(
    "linknet34",
    description="LinkNet on a ResNet-34 encoder (smp)",
    default_loss="dice",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_linknet34(
    in_channels: int, classes: int, encoder_weights: str | None = None
) -> nn.Module:
    """smp's LinkNet decoder already upsamples with transposed convolutions, as the original."""
    import segmentation_models_pytorch as smp

    return load_with_pretrained(
        "linknet34",
        "resnet34",
        encoder_weights,
        lambda w: smp.Linknet(
            encoder_name="resnet34", encoder_weights=w, in_channels=in_channels, classes=classes
        ),
    )


@register_member(
    "unet_resnet50",
    description="U-Net on a ResNet-50 encoder (smp decoder, or transposed-conv)",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_unet_resnet50(
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
    decoder: DecoderName = "smp",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
) -> nn.Module:
    """ResNet-50 U-Net; ``decoder="transposed"`` gives the seed's conv+ReLU/transposed-conv decoder."""
    return _unet(
        "unet_resnet50",
        "resnet50",
        in_channels,
        classes,
        encoder_weights,
        decoder,
        decoder_channels,
        full_res_skip=False,
    )


@register_member(
    "unet_se_resnet50",
    description="U-Net on an SE-ResNet-50 encoder (smp decoder, or transposed-conv)",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_unet_se_resnet50(
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
    decoder: DecoderName = "smp",
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
) -> nn.Module:
    """SE-ResNet-50 U-Net; ``decoder="transposed"`` gives the seed's decoder."""
    return _unet(
        "unet_se_resnet50",
        "se_resnet50",
        in_channels,
        classes,
        encoder_weights,
        decoder,
        decoder_channels,
        full_res_skip=False,
    )


@register_member(
    "v19unet",
    description="U-Net on VGG19 with the mirror-image decoder (v19pUNet when pretrained)",
    smp_backed=True,
    pretrainable=True,
    recommended_in_channels=3,
)
def build_v19unet(
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
) -> nn.Module:
    """Decoder blocks mirror VGG19's (4, 4, 4, 2, 2 convs of 512, 512, 256, 128, 64 channels)."""
    enc = smp_encoder("v19unet", "vgg19", in_channels, encoder_weights)
    dec = TransposedUnetDecoder(
        enc.out_channels, V19_DECODER_CHANNELS, V19_DECODER_CONVS, full_res_skip=True
    )
    return EncoderDecoder(enc, dec, classes)
