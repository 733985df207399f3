"""HiFi-GAN's networks (Kong, Kim, Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient
and High Fidelity Speech Synthesis", NeurIPS 2020, https://arxiv.org/abs/2010.05646; layer by
layer as jik876/hifi-gan's models.py).

- ``hifigan_generator``: log-mel (B, n_mels, F) -> waveform (B, 1, F * hop): a 7-tap conv,
  then per stage a leaky ReLU (0.1), a transposed conv that upsamples by ``rates[i]`` and
  halves the channels, and multi-receptive-field fusion (the mean of one residual block per
  kernel size); leaky ReLU (0.01), a 7-tap conv to one channel, tanh. Weight norm everywhere,
  weights drawn from N(0, 0.01). ``version: v1 | v2 | v3`` gives the paper's configurations;
  any argument overrides them (``channels``: a CPU-sized V3).
- ``hifigan_mpd``: the multi-period discriminator: for each period p (2, 3, 5, 7, 11) the
  waveform is reflect-padded to a multiple of p and reshaped to (T / p, p), then 2-D convs
  with (5, 1) kernels (stride 3) see every p-th sample; weight norm.
- ``hifigan_msd``: the multi-scale discriminator: grouped 1-D convs on the raw waveform (spectral
  norm) and on it average-pooled x2 and x4 (weight norm).

Both discriminators return a :class:`ganforge.system.Judgement`: one logit map per
sub-discriminator and each one's feature maps (for feature matching). ``width`` scales every
channel count (1 = the paper's; the CPU demo uses less).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from ganforge import hookimpl
from ganforge.errors import ConfigError
from ganforge.system import Judgement

__all__ = ["Generator", "MultiPeriodDiscriminator", "MultiScaleDiscriminator", "VERSIONS"]

#: config_v1.json, config_v2.json, config_v3.json
VERSIONS = {
    "v1": dict(rates=(8, 8, 2, 2), kernels=(16, 16, 4, 4), channels=512, resblock=1,
               resblock_kernels=(3, 7, 11), dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v2": dict(rates=(8, 8, 2, 2), kernels=(16, 16, 4, 4), channels=128, resblock=1,
               resblock_kernels=(3, 7, 11), dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5))),
    "v3": dict(rates=(8, 8, 4), kernels=(16, 16, 8), channels=256, resblock=2,
               resblock_kernels=(3, 5, 7), dilations=((1, 2), (2, 6), (3, 12))),
}
SLOPE = 0.1  # LRELU_SLOPE


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        module.weight.data.normal_(0.0, 0.01)


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Two convs per dilation: ``x + conv(lrelu(conv_d(lrelu(x))))``."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, 1, _padding(kernel, d), d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, 1, _padding(kernel)))
                                    for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, SLOPE)), SLOPE))
        return x


class ResBlock2(nn.Module):
    """One conv per dilation (V3): ``x + conv_d(lrelu(x))``."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(weight_norm(nn.Conv1d(channels, channels, kernel, 1, _padding(kernel, d), d))
                                   for d in dilations)

    def forward(self, x):
        for c in self.convs:
            x = x + c(F.leaky_relu(x, SLOPE))
        return x


class Generator(nn.Module):
    def __init__(self, n_mels: int, rates, kernels, channels: int, resblock: int, resblock_kernels, dilations):
        super().__init__()
        self.hop = math.prod(rates)
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, channels, 7, 1, padding=3))
        block = ResBlock1 if resblock == 1 else ResBlock2
        self.ups, self.resblocks = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels, strict=True)):
            c_in, c_out = channels // 2 ** i, channels // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)))
            self.resblocks.extend(block(c_out, rk, tuple(d)) for rk, d in zip(resblock_kernels, dilations, strict=True))
        self.kernels = len(resblock_kernels)
        self.conv_post = weight_norm(nn.Conv1d(c_out, 1, 7, 1, padding=3))
        self.apply(_init)

    def forward(self, mel):
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            blocks = self.resblocks[i * self.kernels:(i + 1) * self.kernels]
            fused = blocks[0](x)
            for b in blocks[1:]:
                fused = fused + b(x)
            x = fused / self.kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def hifigan_generator(*, n_mels: int, hop: int, version: str = "v1", **overrides):
    """HiFi-GAN's generator: version v1 | v2 | v3 (the paper's), any of rates, kernels, channels,
    resblock (1 | 2), resblock_kernels, dilations overriding it; the product of rates must be the hop."""
    if version not in VERSIONS:
        raise ConfigError(f"hifigan_generator: version is one of {', '.join(VERSIONS)}, got {version!r}")
    unknown = sorted(set(overrides) - set(VERSIONS[version]))
    if unknown:
        raise ConfigError(f"hifigan_generator has no argument {', '.join(unknown)}; it takes version, "
                          f"{', '.join(VERSIONS[version])}")
    cfg = {**VERSIONS[version], **overrides}
    if math.prod(cfg["rates"]) != hop:
        raise ConfigError(f"hifigan_generator: its upsampling rates {list(cfg['rates'])} multiply to "
                          f"{math.prod(cfg['rates'])}, but the mel hop is {hop}; one mel frame must become hop samples")
    if len(cfg["kernels"]) != len(cfg["rates"]) or len(cfg["dilations"]) != len(cfg["resblock_kernels"]):
        raise ConfigError("hifigan_generator: one kernel per rate and one dilation list per resblock kernel are needed")
    if cfg["channels"] % 2 ** len(cfg["rates"]):
        raise ConfigError(f"hifigan_generator: channels ({cfg['channels']}) must halve {len(cfg['rates'])} times")
    return Generator(n_mels, **cfg)


# ------------------------------------------------------------------ discriminators
def _scaled(channels: int, width: float) -> int:
    return max(16, int(round(channels * width / 16)) * 16)


def _judge(d: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A sub-discriminator's convs (leaky ReLU after each) and output conv: its flattened logits
    and every layer's output (the features that feature matching compares)."""
    features = []
    for conv in d.convs:
        x = F.leaky_relu(conv(x), SLOPE)
        features.append(x)
    x = d.conv_post(x)
    features.append(x)
    return torch.flatten(x, 1, -1), features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: float = 1.0, kernel: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        sizes = [1, *(_scaled(c, width) for c in (32, 128, 512, 1024))]
        pad = (_padding(kernel), 0)
        self.convs = nn.ModuleList(weight_norm(nn.Conv2d(a, b, (kernel, 1), (stride, 1), pad))
                                   for a, b in zip(sizes, sizes[1:]))
        self.convs.append(weight_norm(nn.Conv2d(sizes[-1], sizes[-1], (kernel, 1), 1, pad)))
        self.conv_post = weight_norm(nn.Conv2d(sizes[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, x):
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
            t = x.shape[-1]
        return _judge(self, x.view(b, c, t // self.period, self.period))


class ScaleDiscriminator(nn.Module):
    # (out channels, kernel, stride, groups) of jik876/hifi-gan's DiscriminatorS
    LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16),
              (1024, 41, 1, 16), (1024, 5, 1, 1))

    def __init__(self, width: float = 1.0, spectral: bool = False):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        self.convs, c_in = nn.ModuleList(), 1
        for c, k, s, g in self.LAYERS:
            c_out = _scaled(c, width)
            self.convs.append(norm(nn.Conv1d(c_in, c_out, k, s, groups=min(g, c_in, c_out) if c_in > 1 else 1,
                                             padding=_padding(k))))
            c_in = c_out
        self.conv_post = norm(nn.Conv1d(c_in, 1, 3, 1, padding=1))

    def forward(self, x):
        return _judge(self, x)


class _Multi(nn.Module):
    """Sub-discriminators over (views of) the waveform -> one Judgement."""

    discriminators: nn.ModuleList

    def views(self, x):
        return [x] * len(self.discriminators)

    def forward(self, x):
        logits, features = [], []
        for d, view in zip(self.discriminators, self.views(x), strict=True):
            out, feats = d(view)
            logits.append(out)
            features.append(feats)
        return Judgement(logits, features)


class MultiPeriodDiscriminator(_Multi):
    def __init__(self, periods=(2, 3, 5, 7, 11), width: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)


class MultiScaleDiscriminator(_Multi):
    def __init__(self, scales: int = 3, width: float = 1.0):
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(width, spectral=i == 0) for i in range(scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def views(self, x):
        out = [x]
        for _ in self.discriminators[1:]:
            out.append(self.pool(out[-1]))
        return out


def _check_input(in_shape, name):
    if len(in_shape) != 2 or in_shape[0] != 1:
        raise ConfigError(f"{name} judges mono waveforms (1, T); the data's samples have shape {tuple(in_shape)}")


def hifigan_mpd(*, in_shape, periods=(2, 3, 5, 7, 11), width: float = 1.0):
    """HiFi-GAN's multi-period discriminator (periods 2, 3, 5, 7, 11; width scales the channels)."""
    _check_input(in_shape, "hifigan_mpd")
    if not periods or any(int(p) < 1 for p in periods):
        raise ConfigError(f"hifigan_mpd: periods are positive integers, got {list(periods)}")
    return MultiPeriodDiscriminator(tuple(int(p) for p in periods), width)


def hifigan_msd(*, in_shape, scales: int = 3, width: float = 1.0):
    """HiFi-GAN's multi-scale discriminator (raw, x2 and x4 average-pooled; width scales the channels)."""
    _check_input(in_shape, "hifigan_msd")
    if scales < 1:
        raise ConfigError(f"hifigan_msd: scales >= 1, got {scales}")
    return MultiScaleDiscriminator(scales, width)


@hookimpl
def ganforge_register_generators(register):
    register("hifigan_generator", hifigan_generator)


@hookimpl
def ganforge_register_discriminators(register):
    register("hifigan_mpd", hifigan_mpd)
    register("hifigan_msd", hifigan_msd)
