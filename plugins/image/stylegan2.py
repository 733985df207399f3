"""StyleGAN2's networks (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN"), as stylegan2-ada-pytorch's ``training/networks.py`` builds them, written anew.

Generator ``stylegan2``: a mapping network (z normalised by its second moment; with classes, an
embedded label normalised the same way and concatenated; ``map`` fully connected layers at lr
multiplier 0.01; ``w_avg``, the running mean of w, tracked with beta 0.995) and a synthesis
network (a learned constant 4x4 input; per resolution two modulated 3x3 convolutions with
demodulation, the first upsampling; per-layer noise with a learned strength; the "skip" ToRGB
architecture, the image upsampled and summed across resolutions). Discriminator ``stylegan2``:
residual blocks (``architecture: resnet``; ``orig`` without the skips, as the ``cifar`` config
uses), minibatch standard deviation (``mbstd_group``, ``mbstd_channels``) and, with classes, a
projection of the label's embedding at its output.

Every weight uses the equalized learning rate (stored N(0, 1), scaled by 1/sqrt(fan-in) when
used; the mapping's by 0.01 more, and its learning rate with it). Up- and downsampling filter
with [1, 3, 3, 1] (StyleGAN2's ``upfirdn2d``): upsampling inserts zeros, filters (gain 4),
keeping the filter's one-pixel spill around the image, and then convolves with the kernel
flipped and no padding, which equals StyleGAN2's transposed convolution followed by the filter
(convolutions commute), border included, with the reference's weight layout (checked by hand:
the synthesis network matched stylegan2-ada-pytorch's to 2e-6 given its weights; the test checks
the up layer against the reference's formula); downsampling filters and
then convolves with stride 2.

Widths as StyleGAN2-ADA's configs set them: ``min(channel_base / resolution, channel_max)``
channels at each resolution, ``channel_base = fmaps * 32768`` (``cifar``: fmaps 1, channel_max
512; ``paper256``: fmaps 0.5).

Numerics under autocast: the styles, the demodulation coefficients, the noise, the mapping
network (normalisation and w), minibatch standard deviation and the output layers are computed in
fp32; the convolutions run in the autocast dtype. ``conv_clamp`` (StyleGAN2-ADA: 256 for its
fp16 layers) clamps every convolution's output to +-conv_clamp (None: no clamp; bf16 has fp32's
range and needs none). ``fused``: the modulated convolutions as one grouped convolution per
layer with per-sample weights, else input scaling + a shared convolution + output scaling (the
two agree to 1e-5 in fp32; stylegan2-ada-pytorch has both and picks per layer).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import hookimpl
from ganforge.plugins.objectives import Unconditional, one_logit_each
from ganforge.layers import lowpass_2x, upsample_2x
from ganforge.system import Judged, Terms, d_adversarial, g_adversarial

__all__ = ["Discriminator", "FullyConnected", "Generator", "Mapping", "StyleGAN2", "Synthesis", "modulated_conv2d",
           "style_mix", "truncate"]

SQRT2 = math.sqrt(2.0)


def _fp32(device: torch.device):
    return torch.autocast(device.type, enabled=False)


def _act(x: torch.Tensor, activation: str, clamp: float | None = None) -> torch.Tensor:
    """StyleGAN2's ``bias_act`` after the bias: lrelu(0.2) with gain sqrt(2), or linear; then the clamp."""
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * SQRT2
    if clamp is not None:  # (after the activation's gain, as StyleGAN2's bias_act)
        x = x.clamp(-clamp, clamp)
    return x


def blur(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int, int, int], gain: float = 1.0) -> torch.Tensor:
    """Depthwise filtering with the 4x4 ``f`` after padding ``pad`` (left, right, top, bottom)."""
    c = x.shape[1]
    weight = (f * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, pad), weight, groups=c)


class FullyConnected(nn.Module):
    """A linear layer with the equalized learning rate: the weight is stored N(0, 1) / lr_mult and
    used times lr_mult / sqrt(in_features); the bias times lr_mult."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear", lr_mult: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.bias_gain = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain
        return _act(torch.addmm(b.unsqueeze(0), x, w.t()), self.activation)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class Mapping(nn.Module):
    """z (and a class) -> w, broadcast to ``num_ws`` layers; keeps ``w_avg``. Runs in fp32."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, layers: int = 8, lr_mult: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        if c_dim and layers < 1:
            raise ValueError("map must be >= 1 with conditioning: the label's embedding is mapped with z")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim else None
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * layers
        if layers == 0 and features[0] != w_dim:
            raise ValueError(f"map: 0 needs z_dim == w_dim ({z_dim} != {w_dim})")
        self.fcs = nn.ModuleList(FullyConnected(a, b, "lrelu", lr_mult) for a, b in zip(features, features[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, update_w_avg: bool = False) -> torch.Tensor:
        with _fp32((z if z is not None else c).device):
            x = normalize_2nd_moment(z.float()) if self.z_dim else None
            if self.c_dim:
                y = normalize_2nd_moment(self.embed(F.one_hot(c.long(), self.c_dim).float()))
                x = y if x is None else torch.cat([x, y], dim=1)
            for fc in self.fcs:
                x = fc(x)
            if update_w_avg:  # (training: in place, so a captured step holds it)
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
            return x.unsqueeze(1).repeat(1, self.num_ws, 1)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 1, fused: bool = True) -> torch.Tensor:
    """StyleGAN2's modulated convolution: the weight (O, I, k, k) scaled per sample by ``styles``
    (N, I), then (``demodulate``) each output channel's weight normalised to unit L2 norm, so
    unit-variance inputs give unit-variance outputs. Styles and coefficients in fp32; ``fused``: one
    grouped convolution with per-sample weights, else the equivalent scaling around a shared one."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    with _fp32(x.device):
        styles = styles.float()
        w = weight.float()[None] * styles[:, None, :, None, None]  # N O I k k
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None  # N O
    if not fused:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=padding)
        return x * dcoefs.to(x.dtype)[:, :, None, None] if demodulate else x
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    out = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), w.reshape(n * o, i, kh, kw).to(x.dtype), padding=padding,
                   groups=n)
    return out.reshape(n, o, *out.shape[2:])


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution (upsampling first when ``up``), noise, bias, lrelu."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None, fused: bool = True):
        super().__init__()
        self.up, self.resolution, self.conv_clamp, self.fused = up, resolution, conv_clamp, fused
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("f", lowpass_2x(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """``noise``: this layer's noise map for each image (N, 1, R, R), instead of ``noise_mode``'s
        (projection optimises them)."""
        with _fp32(x.device):
            styles = self.affine(w.float())
        weight, padding = self.weight, 1
        if self.up:  # as the reference's transposed convolution: the upsampled image with its
            # one-pixel spill (no zero padding at the border), and a true convolution (the kernel
            # flipped), so that its weights are stylegan2-ada-pytorch's, layout included
            x, weight, padding = upsample_2x(x, self.f, border=1), weight.flip([2, 3]), 0
        x = modulated_conv2d(x, weight, styles, demodulate=True, padding=padding, fused=self.fused)
        with _fp32(x.device):
            if noise is not None:
                x = x.float() + noise.float() * self.noise_strength
            elif noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
                x = x.float() + noise * self.noise_strength
            elif noise_mode == "const":
                x = x.float() + self.noise_const * self.noise_strength
            x = x.float() + self.bias.float()[None, :, None, None]
        return _act(x, "lrelu", self.conv_clamp)


class ToRGB(nn.Module):
    """A modulated 1x1 convolution without demodulation, to the image's channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None,
                 fused: bool = True):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.conv_clamp, self.fused = conv_clamp, fused

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        with _fp32(x.device):
            styles = self.affine(w.float()) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=0, fused=self.fused)
        return _act(x.float() + self.bias.float()[None, :, None, None], "linear", self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (the constant at 4x4) two synthesis layers and a ToRGB added to the
    upsampled image of the block before ("skip")."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None, fused: bool):
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp,
                                        fused=fused)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp, fused=fused)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp, fused)
        self.num_ws = 2 if resolution == 4 else 3  # (conv1 + torgb at 4x4; the torgb's w is shared with the next)
        self.register_buffer("f", lowpass_2x(), persistent=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str, noise: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``noise``: an iterator over the noise maps of the layers, in order, or ``None``."""
        take = (lambda: next(noise)) if noise is not None else (lambda: None)
        if self.conv0 is None:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode, take())
            rgb_w = ws[:, 1]
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, take())
            x = self.conv1(x, ws[:, 1], noise_mode, take())
            rgb_w = ws[:, 2]
        y = self.torgb(x, rgb_w)
        img = y if img is None else upsample_2x(img, self.f) + y
        return x, img


def _resolutions(size: int) -> list[int]:
    return [2 ** i for i in range(2, int(math.log2(size)) + 1)]


def _channels(resolution: int, fmaps: float, channel_max: int) -> int:
    return max(1, min(int(fmaps * 32768) // resolution, channel_max))


class Synthesis(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, C, R, R)."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, fmaps: float, channel_max: int,
                 conv_clamp: float | None, fused: bool):
        super().__init__()
        self.blocks = nn.ModuleList()
        prev = 0
        for res in _resolutions(resolution):
            ch = _channels(res, fmaps, channel_max)
            self.blocks.append(SynthesisBlock(prev, ch, w_dim, res, img_channels, conv_clamp, fused))
            prev = ch
        self.num_ws = 2 * len(self.blocks)  # conv1 + torgb at 4x4, conv0 + conv1 above (torgb's w shared)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", noise: list[torch.Tensor] | None = None
                ) -> torch.Tensor:
        """``noise``: a noise map per synthesis layer (low resolutions first), each (N, 1, R, R),
        instead of ``noise_mode``'s (projection optimises them)."""
        x = img = None
        at = 0
        maps = iter(noise) if noise is not None else None
        for block in self.blocks:
            x, img = block(x, img, ws[:, at:at + block.num_ws], noise_mode, maps)
            at += block.num_ws - 1
        return img


class Generator(nn.Module):
    """StyleGAN2's generator (see the module docstring). ``G(z)`` / ``G(z, c)`` makes images;
    ``G(ws=ws)`` runs the synthesis network alone (path length on w, projection, style mixing
    grids); ``G(z, c, mix=z2, mix_prob=0.9)`` mixes styles at a random crossover layer;
    ``return_ws=True`` also returns the ws used."""

    def __init__(self, z_dim: int, out_shape: Sequence[int], num_classes: int | None = None, w_dim: int = 512,
                 map: int = 8, fmaps: float = 1.0, channel_max: int = 512, conv_clamp: float | None = None,
                 fused: bool = False, noise_mode: str = "random", w_avg_beta: float = 0.995):
        super().__init__()
        if len(out_shape) != 3 or out_shape[1] != out_shape[2]:
            raise ValueError(f"stylegan2 makes square images (C, R, R), got samples of shape {tuple(out_shape)}")
        resolution = out_shape[1]
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"stylegan2 needs a power-of-two image size >= 8, got {resolution} (MNIST: "
                             f"data.args.pad=2 gives 32x32)")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be random, const or none, got '{noise_mode}'")
        self.out_shape, self.noise_mode, self.z_dim = tuple(out_shape), noise_mode, z_dim
        self.synthesis = Synthesis(w_dim, resolution, out_shape[0], fmaps, channel_max, conv_clamp, fused)
        self.mapping = Mapping(z_dim, num_classes or 0, w_dim, self.synthesis.num_ws, map, 0.01, w_avg_beta)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z: torch.Tensor | None = None, c: torch.Tensor | None = None, *, ws: torch.Tensor | None = None,
                mix: torch.Tensor | None = None, mix_prob: float = 0.0, psi: float = 1.0,
                w_avg: torch.Tensor | None = None, noise_mode: str | None = None, update_w_avg: bool = False,
                return_ws: bool = False) -> Any:
        """Images for ``z`` (and classes ``c``), or for ``ws`` (N, num_ws, w_dim) given. ``mix``:
        other z whose styles replace these from a random layer, with probability ``mix_prob``;
        ``psi``: truncation towards ``w_avg`` (default: the tracked mean; a conditional run passes its
        class's); ``update_w_avg``: move the tracked mean towards this batch's (training);
        ``noise_mode``: random | const | none (default: the network's setting while training, const
        in eval mode, so that the same z gives the same image)."""
        if ws is None:
            ws = self.mapping(z, c, update_w_avg=update_w_avg)
            if mix is not None and mix_prob > 0:
                ws = style_mix(ws, self.mapping(mix, c), mix_prob)
            if psi != 1.0:
                ws = truncate(ws, self.mapping.w_avg if w_avg is None else w_avg, psi)
        if noise_mode is None:
            noise_mode = self.noise_mode if self.training or self.noise_mode == "none" else "const"
        img = self.synthesis(ws, noise_mode)
        return (img, ws) if return_ws else img


def style_mix(ws: torch.Tensor, other: torch.Tensor, prob: float) -> torch.Tensor:
    """StyleGAN2's mixing regularisation: with probability ``prob`` the whole batch takes
    ``other``'s styles from a crossover layer drawn uniformly in [1, num_ws); tensor code only."""
    num_ws = ws.shape[1]
    cutoff = torch.randint(1, num_ws, [], device=ws.device)
    cutoff = torch.where(torch.rand([], device=ws.device) < prob, cutoff, torch.full_like(cutoff, num_ws))
    later = torch.arange(num_ws, device=ws.device)[None, :, None] >= cutoff
    return torch.where(later, other, ws)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """The truncation trick: w_avg + psi (w - w_avg), on the first ``cutoff`` layers (all: None);
    ``w_avg`` (w_dim,), or one per sample (N, w_dim)."""
    w_avg = w_avg.to(ws.dtype)
    out = (w_avg[:, None] if w_avg.dim() == 2 else w_avg).lerp(ws, psi)
    if cutoff is None:
        return out
    return torch.cat([out[:, :cutoff], ws[:, cutoff:]], dim=1)


# --------------------------------------------------------------------------- discriminator
class Conv2dLayer(nn.Module):
    """A convolution with the equalized learning rate; ``down``: the filter, then stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, activation: str = "linear",
                 down: bool = False, conv_clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.kernel, self.down, self.activation, self.conv_clamp = kernel, down, activation, conv_clamp
        self.register_buffer("f", lowpass_2x(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.down:
            p = self.kernel // 2 + 1  # (k=3: 2 each side, k=1: 1; then stride 2 halves exactly)
            x = blur(x, self.f, (p,) * 4 if self.kernel > 1 else (1, 1, 1, 1))
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        x = _act(x, self.activation, None)
        x = x * gain if gain != 1.0 else x
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp * gain, self.conv_clamp * gain)
        return x


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions, the second halving; ``resnet``: plus a 1x1 halving skip, each branch x sqrt(0.5)."""

    def __init__(self, in_channels: int, out_channels: int, architecture: str, conv_clamp: float | None):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, activation="lrelu", down=True, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, down=True) if architecture == "resnet" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return self.conv1(self.conv0(x))
        return self.skip(x, gain=math.sqrt(0.5)) + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


def minibatch_stddev(x: torch.Tensor, group_size: int, channels: int) -> torch.Tensor:
    """StyleGAN's minibatch standard deviation, in fp32: per group of ``group_size`` samples (the
    batch when smaller; it must divide the batch), the standard deviation of each feature over the
    group, averaged over ``channels`` slices of the features and the pixels, appended as
    ``channels`` constant maps."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f"minibatch stddev: the batch ({n}) must be a multiple of mbstd_group ({g})")
    with _fp32(x.device):
        y = x.float().reshape(g, -1, channels, c // channels, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # n/g, F, c/F, H, W
        y = y.mean(dim=[2, 3, 4]).reshape(-1, channels, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2's discriminator (see the module docstring): D(x) or D(x, c) -> (N, 1) logits."""

    def __init__(self, in_shape: Sequence[int], num_classes: int | None = None, fmaps: float = 1.0,
                 channel_max: int = 512, architecture: str = "resnet", mbstd_group: int = 4, mbstd_channels: int = 1,
                 cmap_dim: int | None = None, conv_clamp: float | None = None):
        super().__init__()
        if len(in_shape) != 3 or in_shape[1] != in_shape[2] or in_shape[1] < 8 or in_shape[1] & (in_shape[1] - 1):
            raise ValueError(f"stylegan2's discriminator needs square power-of-two images >= 8, got {tuple(in_shape)}")
        if architecture not in ("resnet", "orig"):
            raise ValueError(f"architecture must be resnet or orig, got '{architecture}'")
        resolution = in_shape[1]
        res = _resolutions(resolution)[::-1]  # R ... 4
        top = _channels(res[0], fmaps, channel_max)
        self.fromrgb = Conv2dLayer(in_shape[0], top, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(_channels(r, fmaps, channel_max), _channels(r // 2, fmaps, channel_max), architecture,
                               conv_clamp) for r in res[:-1])
        c4 = _channels(4, fmaps, channel_max)
        if c4 % mbstd_channels:
            raise ValueError(f"mbstd_channels ({mbstd_channels}) must divide the 4x4 width ({c4})")
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = Conv2dLayer(c4 + mbstd_channels, c4, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, "lrelu")
        self.num_classes = num_classes or 0
        self.cmap_dim = (cmap_dim or c4) if self.num_classes else 1
        self.out = FullyConnected(c4, self.cmap_dim)
        if self.num_classes:  # the label's embedding (a mapping network of c alone, as StyleGAN2-ADA)
            self.mapping = Mapping(0, self.num_classes, self.cmap_dim, num_ws=1, layers=8, lr_mult=0.01)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.fromrgb(x)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        with _fp32(x.device):
            x = self.out(self.fc(x.float().flatten(1)))
            if self.num_classes:
                cmap = self.mapping(None, c)[:, 0]
                x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


def stylegan2_generator(*, z_dim, out_shape, num_classes=None, w_dim: int = 512, map: int = 8, fmaps: float = 1.0,
                        channel_max: int = 512, conv_clamp: float | None = None, fused: bool = False,
                        noise_mode: str = "random"):
    """StyleGAN2's generator: mapping (map FC layers, w_avg) + modulated synthesis with noise and
    skip ToRGB; widths min(fmaps * 32768 / res, channel_max); any power-of-two size >= 8."""
    return Generator(z_dim, out_shape, num_classes, w_dim, map, fmaps, channel_max, conv_clamp, fused, noise_mode)


def stylegan2_discriminator(*, in_shape, num_classes=None, fmaps: float = 1.0, channel_max: int = 512,
                            architecture: str = "resnet", mbstd_group: int = 4, mbstd_channels: int = 1,
                            cmap_dim: int | None = None, conv_clamp: float | None = None):
    """StyleGAN2's residual discriminator with minibatch stddev; with classes, a projection of the
    label's mapping at the output."""
    return Discriminator(in_shape, num_classes, fmaps, channel_max, architecture, mbstd_group, mbstd_channels,
                         cmap_dim, conv_clamp)


# --------------------------------------------------------------------------- the training system
class StyleGAN2(Unconditional):
    """StyleGAN2's training (stylegan2-ada-pytorch's ``training/loss.py``), unconditional or
    class-conditional (``conditional: true``: the dataset's classes, to G's mapping and D's
    projection). Networks ``G`` (EMA) and ``D``, phases ``D`` then ``G``, as the classic GAN:

    - style mixing: G's fakes, in both phases, take a second z's styles from a random crossover
      layer with probability ``style_mixing`` (0.9; StyleGAN2-ADA's ``cifar`` config: 0);
    - path length on w: phase G reports ``Judged(fake=(ws,), forward=G(ws=...))``, so the recipe's
      ``path_length`` penalty (``{name: path_length, weight: 2, every: 4}``) differentiates the
      synthesis network with respect to w, averaged over the layers as StyleGAN2;
    - lazy regularisation: with penalties every ``g_reg_interval`` (4) G steps and
      ``d_reg_interval`` (16) D steps, each optimizer's learning rate is multiplied by
      interval / (interval + 1) and its betas raised to that power, as StyleGAN2 does (0: off);
      the recipe's penalties must use the same ``every``;
    - ``w_avg`` moves with every training batch's mapping, in D's and G's phases (not the mixing
      draw), as stylegan2-ada-pytorch; beta 0.995 per call.

    Samples use the EMA generator with noise_mode const; ``truncation`` psi (``ganforge sample
    --truncation``, ``run.generate(truncation=)``) pulls w towards ``w_avg``, for a conditional
    run towards its class's mean w (the mean of 4,096 w of that class, computed once)."""

    capturable = True

    def __init__(self, loss, z_dim, sample_shape, n_critic, optim, num_classes: int | None = None,
                 style_mixing: float = 0.9, g_reg_interval: int = 4, d_reg_interval: int = 16):
        super().__init__(loss, z_dim, sample_shape, n_critic, optim)
        if not 0.0 <= style_mixing <= 1.0:
            raise ValueError(f"style_mixing is a probability in [0, 1], got {style_mixing}")
        self.num_classes, self.style_mixing = num_classes, style_mixing
        if num_classes:
            self.networks["G"].context["num_classes"] = num_classes
            self.networks["D"].context["num_classes"] = num_classes
        for name, every in (("G", g_reg_interval), ("D", d_reg_interval)):
            opt = self.optimizers[name]
            if every and all(isinstance(b, (int, float)) for b in opt.betas):
                ratio = every / (every + 1)
                opt.lr, opt.betas = opt.lr * ratio, tuple(b ** ratio for b in opt.betas)
        self._class_w: dict[Any, torch.Tensor] = {}

    def check(self, nets):
        if not (hasattr(nets["G"], "mapping") and hasattr(nets["G"], "synthesis")):
            raise ValueError(f"stylegan2 needs a generator with a mapping and a synthesis network (generator: "
                             f"stylegan2), got {type(nets['G']).__name__}")
        super().check(nets)

    def check_discriminator(self, D, fake, noise):
        one_logit_each(D(fake, noise[1]) if self.num_classes else D(fake))

    # --- inputs
    def noise(self, n, device="cpu", generator=None, labels: torch.Tensor | None = None):
        z = torch.randn(n, self.z_dim, device=device, generator=generator)
        if not self.num_classes:
            return z
        y = torch.randint(self.num_classes, (n,), device=device, generator=generator) if labels is None \
            else labels.to(device)
        return z, y

    def grid_noise(self, n, device="cpu", generator=None):
        if not self.num_classes:
            return self.noise(n, device, generator)
        cols = max(1, -(-n // self.num_classes))  # one row per class, the same z down each column
        self.grid_nrow = cols
        z = torch.randn(cols, self.z_dim, device=device, generator=generator).repeat(self.num_classes, 1)
        return z, torch.arange(self.num_classes, device=device).repeat_interleave(cols)

    def labels_of(self, noise):
        return noise[1] if self.num_classes else None

    def _zc(self, noise) -> tuple[torch.Tensor, torch.Tensor | None]:
        return (noise[0], noise[1]) if self.num_classes else (noise, None)

    def generate(self, nets, noise, truncation: float = 1.0):
        z, c = self._zc(noise)
        if truncation == 1.0:
            return nets["G"](z, c)
        w_avg = self.class_w_avg(nets["G"], c) if c is not None else None
        return nets["G"](z, c, psi=truncation, w_avg=w_avg)

    def class_w_avg(self, G: nn.Module, c: torch.Tensor) -> torch.Tensor:
        """Each sample's class's mean w (N, w_dim): the mean of 4,096 w of the class (fixed z)."""
        key = (id(G), c.device)
        if key not in self._class_w:
            gen = torch.Generator().manual_seed(0)
            means = []
            for k in range(self.num_classes):
                z = torch.randn(4096, self.z_dim, generator=gen).to(c.device)
                means.append(G.mapping(z, torch.full((4096,), k, device=c.device))[:, 0].mean(0))
            self._class_w[key] = torch.stack(means)
        return self._class_w[key][c]

    # --- latent controls: the W space
    def _class(self, label: int | None, n: int, device: Any) -> torch.Tensor | None:
        """The class tensor for ``n`` samples of ``label`` (conditional runs; default class 0)."""
        if not self.num_classes:
            if label is not None:
                raise ValueError(f"a label needs a class-conditional run; this one has no classes, got {label}")
            return None
        if label is not None and not 0 <= label < self.num_classes:
            raise ValueError(f"label must be a class 0 to {self.num_classes - 1} of this run, got {label}")
        return torch.full((n,), label or 0, device=device)

    def _ws(self, G: nn.Module, n: int, seed: int, label: int | None) -> torch.Tensor:
        device = next(G.parameters()).device
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
        return G.mapping(z, self._class(label, n, device))

    def directions(self, nets, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """SeFa (Shen & Zhou 2021, closed-form factorisation): the ``k`` unit directions in W that
        the style affine layers (all of them, stacked) stretch most, the top eigenvectors of
        A^T A, largest first; and the standard deviation of w along each (from 4,096 w), the
        unit of an edit. Returns ``(directions (k, w_dim), sigmas (k,))``, in fp32."""
        G = nets["G"]
        affines = [m.affine for m in G.synthesis.modules() if isinstance(m, (SynthesisLayer, ToRGB))]
        A = torch.cat([a.weight.float() * a.weight_gain for a in affines])  # (sum of input widths, w_dim)
        if not 1 <= k <= A.shape[1]:
            raise ValueError(f"k is a number of directions in 1..{A.shape[1]} (w_dim), got {k}")
        _, vectors = torch.linalg.eigh(A.t() @ A)  # ascending eigenvalues
        dirs = vectors[:, -k:].flip(1).t().contiguous()
        w = self._ws(G, 4096, 0, None)[:, 0].float()
        return dirs, (w @ dirs.t()).std(0)

    def direction_grid(self, nets, k: int = 5, steps: int = 7, span: float = 3.0, seed: int = 0,
                       label: int | None = None) -> tuple[torch.Tensor, int]:
        """An edit grid: a row per direction (:meth:`directions`), ``steps`` columns from -span to
        +span sigmas, every image the same w (z from ``seed``) moved along the row's direction."""
        G = nets["G"]
        dirs, sigmas = self.directions(nets, k)
        w = self._ws(G, 1, seed, label)
        offsets = torch.linspace(-span, span, steps, device=w.device)
        ws = torch.cat([w + (a * s * d)[None, None] for d, s in zip(dirs, sigmas) for a in offsets])
        return G.synthesis(ws, "const"), steps

    def mixing_grid(self, nets, n: int = 4, seed: int = 0, label: int | None = None) -> tuple[torch.Tensor, int]:
        """StyleGAN's style-mixing figure: the top row holds ``n`` column sources, the left column
        ``n`` row sources, three times: the row source's coarse, middle, then fine styles (thirds
        of the layers, low resolutions first) over the column source's others. A blank corner."""
        G = nets["G"]
        cols, rows = self._ws(G, n, seed, label), self._ws(G, n, seed + 1, label)
        col_imgs, row_imgs = G.synthesis(cols, "const"), G.synthesis(rows, "const")
        num_ws = G.num_ws
        cuts = [0, num_ws // 3, 2 * num_ws // 3, num_ws]
        tiles = [torch.full_like(col_imgs[:1], -1.0), *col_imgs]
        for g in range(3):
            layer = torch.arange(num_ws, device=cols.device)
            take = ((layer >= cuts[g]) & (layer < cuts[g + 1]))[None, :, None]
            for r in range(n):
                mixed = torch.where(take, rows[r:r + 1].expand_as(cols), cols)
                tiles += [row_imgs[r:r + 1], *G.synthesis(mixed, "const")]
        return torch.cat([t if t.dim() == 4 else t[None] for t in tiles]), n + 1

    def project(self, nets, images: torch.Tensor, steps: int = 1000, w_plus: bool = False,
                distance: str = "discriminator", label: int | None = None, seed: int = 0):
        """GAN inversion of ``images`` (N, C, R, R) in [-1, 1] into W (or W+): see
        :mod:`ganforge.plugins.image.projection`. Returns ``(ws, reconstructions, frames, distances)``."""
        from ganforge.plugins.image.projection import project

        shape = tuple(images.shape[1:])
        if shape != self.sample_shape:
            raise ValueError(f"images of shape {list(shape)}, but this run makes {list(self.sample_shape)}")
        c = self._class(label, len(images), images.device)
        return project(nets["G"], images, steps=steps, w_plus=w_plus, distance=distance, D=nets.get("D"), c=c,
                       seed=seed)

    # --- the phases
    def _batch(self, batch):
        if self.num_classes:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("stylegan2 with conditional: true needs (image, label) batches")
            return batch[0], batch[1]
        return self._real(batch), None

    def _mix(self, z: torch.Tensor) -> torch.Tensor | None:
        """The second z of style mixing (none drawn when mixing is off)."""
        return torch.randn_like(z) if self.style_mixing else None

    def d_loss(self, batch) -> Terms:
        real, y_real = self._batch(batch)
        noise = self.noise(real.shape[0], real.device)
        z, c = self._zc(noise)
        with torch.no_grad():
            fake = self.G(z, c, mix=self._mix(z), mix_prob=self.style_mixing, update_w_avg=True)
        real_logits = self.D(real, y_real) if c is not None else self.D(real)
        fake_logits = self.D(fake, c) if c is not None else self.D(fake)
        loss, logs = d_adversarial(self.loss, real_logits, fake_logits)
        D = self.D
        forward = (lambda x: D(x, y_real)) if c is not None else None
        return Terms(loss, logs, judged={"D": Judged((real,), (fake,), forward, real_logits=real_logits)})

    def g_loss(self, batch) -> Terms:
        real, y_real = self._batch(batch)
        z, c = self._zc(self.noise(real.shape[0], real.device))
        fake, ws = self.G(z, c, mix=self._mix(z), mix_prob=self.style_mixing, update_w_avg=True, return_ws=True)
        D, G = self.D, self.G
        fake_logits = D(fake, c) if c is not None else D(fake)
        loss, logs = g_adversarial(self.loss, fake_logits, (lambda: D(real, y_real)) if c is not None else
                                   (lambda: D(real)))
        # path length on w, with w's graph: the penalty trains the mapping network too
        return Terms(loss, logs, judged={"G": Judged(fake=(ws,), forward=lambda w: G(ws=w))})


def stylegan2(*, loss, z_dim, sample_shape, n_critic, optim, dataset=None, num_classes=None,
              conditional: bool = False, style_mixing: float = 0.9, g_reg_interval: int = 4, d_reg_interval: int = 16):
    """StyleGAN2's training: style mixing (0.9), path length on w (the recipe's path_length
    penalty), lazy regularisation's learning-rate and beta correction (G every 4, D every 16),
    w_avg; conditional: the dataset's classes to G's mapping and D's projection."""
    classes = None
    if conditional:
        classes = num_classes or getattr(dataset, "num_classes", None)  # (a checkpoint records the data's)
        if not classes:
            raise ValueError("conditional: true needs a dataset with classes (num_classes), e.g. mnist")
    return StyleGAN2(loss, z_dim, sample_shape, n_critic, optim, classes, style_mixing, g_reg_interval,
                     d_reg_interval)


@hookimpl
def ganforge_register_generators(register):
    register("stylegan2", stylegan2_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("stylegan2", stylegan2_discriminator)


@hookimpl
def ganforge_register_objectives(register):
    register("stylegan2", stylegan2)
