"""Small building blocks shared by architecture plugins."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["forward_with_code_head"]


def forward_with_code_head(net: nn.Sequential, q: nn.Module | None, x: torch.Tensor, codes: bool):
    """A discriminator's forward when ``net``'s last layer gives the logit and ``q``, on the same
    features, the code logits (InfoGAN's Q head): logits, or ``(logits, code_logits)``."""
    if not codes:
        return net(x).view(-1)
    if q is None:
        raise ValueError("this discriminator has no code head: set discriminator.args.codes")
    h = net[:-1](x)
    return net[-1](h).view(-1), q(h).flatten(1)


CONDITIONINGS_G = ("cbn", "concat", "none")
CONDITIONINGS_D = ("projection", "concat", "none")


class ConditionalBatchNorm(nn.Module):
    """Class-conditional BatchNorm (de Vries et al. 2017; as in BigGAN and StudioGAN): BatchNorm
    without its own affine, then a per-class gain and bias, ``gain = 1 + embed_gain(y)``,
    ``bias = embed_bias(y)`` (an embedding is a linear map of the one-hot label). Both start
    at zero, so it starts as plain BatchNorm."""

    def __init__(self, features: int, num_classes: int, dims: int = 2):
        super().__init__()
        self.bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(features, affine=False)
        self.gain = nn.Embedding(num_classes, features)
        self.bias = nn.Embedding(num_classes, features)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        shape = (-1, h.shape[1]) + (1,) * (h.dim() - 2)
        return h * (1 + self.gain(y)).view(shape) + self.bias(y).view(shape)


def run_conditional(layers: nn.Sequential, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """``layers`` in order, handing the labels to the class-conditional ones."""
    for layer in layers:
        h = layer(h, y) if isinstance(layer, ConditionalBatchNorm) else layer(h)
    return h


def check_condition(kind: str, cond: str, num_classes: int) -> str:
    """The conditioning a network uses: ``auto`` is cbn (G) / projection (D) when there are
    classes and none otherwise; a conditioning without classes is an error."""
    options = CONDITIONINGS_G if kind == "generator" else CONDITIONINGS_D
    if cond == "auto":
        return options[0] if num_classes else "none"
    if cond not in options:
        raise ValueError(f"cond must be one of auto, {', '.join(options)}, got '{cond}'")
    if cond != "none" and num_classes < 1:
        raise ValueError(f"cond={cond} needs labels: use a class-conditional objective "
                         f"(objective=conditional) on a dataset with classes")
    return cond


def needs_labels(cond: str, y: torch.Tensor | None, what: str) -> None:
    if cond != "none" and y is None:
        raise ValueError(f"this {what} is class-conditional (cond={cond}): call it with labels; "
                         f"train it with objective=conditional")


def one_hot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot labels by scatter (no host synchronisation: capture-safe)."""
    return torch.zeros(y.shape[0], num_classes, dtype=dtype, device=y.device).scatter_(1, y[:, None], 1.0)


def projection(embed: nn.Module, y: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The projection discriminator's class term (Miyato & Koyama 2018): ``<embed(y), phi(x)>``
    with ``phi`` the features before the last layer, summed over space for feature maps."""
    phi = features.sum(dim=tuple(range(2, features.dim()))) if features.dim() > 2 else features
    return (embed(y) * phi).sum(1)


def discriminator_forward(d: nn.Module, x: torch.Tensor, y: torch.Tensor | None, codes: bool,
                          spatial: bool = True):
    """The forward of a discriminator built as ``d.net`` (a Sequential whose last layer gives the
    logit), an optional code/class head ``d.q`` on the same features, and its conditioning
    ``d.cond`` (none, concat, projection with ``d.embed``) over ``d.num_classes`` classes.
    ``spatial``: concat the labels as constant maps (conv nets) or to the flattened input (MLPs)."""
    if d.cond == "none":
        return forward_with_code_head(d.net, d.q, x, codes)
    needs_labels(d.cond, y, "discriminator")
    if d.cond == "concat":
        labels = one_hot(y, d.num_classes, x.dtype)
        if spatial:
            x = torch.cat([x, labels[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)
        else:
            x = torch.cat([x.flatten(1), labels], 1)
        return forward_with_code_head(d.net, d.q, x, codes)
    h = d.net[:-1](x)
    logits = d.net[-1](h).view(-1) + projection(d.embed, y, h)
    return (logits, d.q(h).flatten(1)) if codes and d.q is not None else logits


def lowpass_2x(device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The 4x4 low-pass filter StyleGAN2 and R3GAN resample with: [1, 3, 3, 1] (R3GAN's [1, 2, 1]
    made even-length), outer product, sum 1."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device, dtype=dtype)
    return (f[:, None] * f[None, :]) / 64


def upsample_2x(x: torch.Tensor, f: torch.Tensor | None = None, border: int = 0) -> torch.Tensor:
    """2x, bilinear: zeros inserted, then :func:`lowpass_2x` with gain 4 (StyleGAN2's
    ``upfirdn2d`` with up=2), as one transposed convolution per channel: each output pixel is 3/4
    of its nearer and 1/4 of its farther input neighbour along each axis, zero beyond the border
    on every side alike. ``border``: also keep that many pixels of the filter's spill around the
    2H x 2W image (StyleGAN2's up-convolution reads one). ``f``: :func:`lowpass_2x` kept by
    the calling module as a (non-persistent) buffer, so that a training step copies nothing
    from the host; None makes it here."""
    c = x.shape[1]
    f = lowpass_2x(x.device) if f is None else f
    return F.conv_transpose2d(x, (f * 4).to(x.dtype)[None, None].expand(c, 1, 4, 4), stride=2, padding=1 - border,
                              groups=c)


def downsample_2x(x: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
    """1/2: :func:`lowpass_2x`, stride 2, padding 1, per channel (the transpose of
    :func:`upsample_2x`, up to its gain); ``f`` as there."""
    c = x.shape[1]
    f = lowpass_2x(x.device) if f is None else f
    return F.conv2d(x, f.to(x.dtype)[None, None].expand(c, 1, 4, 4), stride=2, padding=1, groups=c)
