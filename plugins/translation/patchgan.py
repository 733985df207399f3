"""The PatchGAN discriminator of pix2pix and CycleGAN.

Isola et al. 2017 (section 3.2.2, appendix 6.1.2): a fully convolutional classifier that
judges each N x N patch of an image as real or fake and returns a map of logits (the losses
average it). ``C64-C128-C256-C512``: 4x4 convolutions, LeakyReLU(0.2), normalisation on all
but the first; ``n_layers`` stride-2 convolutions, then a stride-1 convolution and a 1-channel
one. The receptive field is 70x70 at ``n_layers=3`` (the paper's default), 34 at 2, 16 at 1,
142 at 4. pix2pix's D sees the input and the output side by side as channels (the objective
passes ``in_shape`` with both). ``norm``: ``batch`` (pix2pix), ``instance`` (CycleGAN), ``none``.

``multiscale_patchgan`` is pix2pixHD's discriminator (Wang et al. 2018, "High-Resolution Image
Synthesis and Semantic Manipulation with Conditional GANs"): ``scales`` PatchGANs of the same
shape, the k-th judging the input downsampled k times (3x3 average pooling, stride 2). It returns
a :class:`ganforge.system.Judgement`: one logit map per scale, and each PatchGAN's activations
(after every LeakyReLU) for feature matching (pix2pix's ``feature_weight``; pix2pixHD: 10).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.plugins.translation.unet import init_weights, norm_layer
from ganforge.system import Judgement

__all__ = ["MultiscalePatchGAN", "PatchGANDiscriminator", "receptive_field"]


def receptive_field(n_layers: int) -> int:
    """Side of the input patch one output logit sees: 4x4 kernels, n_layers at stride 2, then two at 1."""
    field = 1
    for stride in [1, 1] + [2] * n_layers:  # from the output back to the input
        field = (field - 1) * stride + 4
    return field


class PatchGANDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if ndf < 1:
            raise ValueError(f"ndf is a number of channels >= 1, got {ndf}")
        if len(in_shape) != 3:
            raise ValueError(f"PatchGAN judges images (C, H, W), got samples of shape {tuple(in_shape)}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1 (3: 70x70 patches), got {n_layers}")
        smallest = min(in_shape[1:])
        if smallest < 3 * 2 ** n_layers:  # n_layers halvings, then two 4x4 convolutions at stride 1
            raise ValueError(f"n_layers={n_layers} needs images of at least {3 * 2 ** n_layers} pixels, got "
                             f"{smallest}; lower n_layers")
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            prev, width = width, ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(prev, width, 4, stride, 1, bias=bias), norm_layer(norm, width), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        self.n_layers = n_layers
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A map of logits, one per patch: (N, 1, H', W')."""
        return self.model(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The activations after each LeakyReLU (feature matching's layers), and the logits."""
        features = []
        for layer in self.model:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                features.append(x)
        return features, x


class MultiscalePatchGAN(nn.Module):
    """pix2pixHD's multi-scale discriminator (see the module docstring)."""

    def __init__(self, in_shape: Sequence[int], ndf: int = 64, n_layers: int = 3, norm: str = "batch", scales: int = 3):
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales is a number of discriminators >= 1, got {scales}")
        smallest = min(in_shape[1:])
        for k in range(scales):
            if smallest < 3 * 2 ** n_layers:
                raise ValueError(f"scale {k} of {scales} sees images of {smallest} pixels, too small for n_layers="
                                 f"{n_layers} (at least {3 * 2 ** n_layers}); lower scales or n_layers")
            smallest = (smallest + 1) // 2
        self.scales = nn.ModuleList(PatchGANDiscriminator(in_shape, ndf, n_layers, norm) for _ in range(scales))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> Judgement:
        logits, features = [], []
        for k, d in enumerate(self.scales):
            if k:
                x = self.down(x)
            f, out = d.features_and_logits(x)
            logits.append(out)
            features.append(f)
        return Judgement(logits, features)


def patchgan(*, in_shape, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
    """PatchGAN (pix2pix/CycleGAN): a logit per 70x70 patch at n_layers=3 (34 at 2, 16 at 1)."""
    return PatchGANDiscriminator(in_shape, ndf, n_layers, norm)


def multiscale_patchgan(*, in_shape, ndf: int = 64, n_layers: int = 3, norm: str = "batch", scales: int = 3):
    """pix2pixHD's multi-scale PatchGAN: one PatchGAN per scale, logits and features of each."""
    return MultiscalePatchGAN(in_shape, ndf, n_layers, norm, scales)


@hookimpl
def ganforge_register_discriminators(register):
    register("patchgan", patchgan)
    register("multiscale_patchgan", multiscale_patchgan)
