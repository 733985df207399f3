"""The mel front end, written once and shared by the audio datasets, the vocoder's losses and
its metrics; and the Griffin-Lim baseline that inverts the same mels.

:class:`Mel` is HiFi-GAN's ``mel_spectrogram`` (jik876/hifi-gan, meldataset.py): the waveform
reflect-padded by ``(n_fft - hop) / 2`` on each side, a Hann-window STFT without centring
(``T / hop`` frames for ``T`` samples), the magnitude ``sqrt(re^2 + im^2 + 1e-9)``, librosa's
Slaney mel filter bank (as HiFi-GAN uses), and ``log(clamp(mel, 1e-5))``. It runs in fp32 even
under autocast (an STFT in bf16 loses the quiet bands), on any device, with tensor ops only.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mel", "MelConfig", "griffin_lim", "mel_filters", "multi_resolution_stft"]


@dataclass(frozen=True)
class MelConfig:
    """HiFi-GAN's analysis parameters (config_v1.json); ``fmax=None`` is the Nyquist frequency
    (the loss mel's ``fmax_for_loss``)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0

    def __post_init__(self):
        if self.win > self.n_fft or (self.n_fft - self.hop) % 2:
            raise ValueError(f"mel: win ({self.win}) <= n_fft ({self.n_fft}) and an even n_fft - hop "
                             f"({self.n_fft - self.hop}) are needed (HiFi-GAN's padding)")
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not self.fmin < self.fmax <= nyquist:
            raise ValueError(f"mel: fmin ({self.fmin}) < fmax ({self.fmax}) <= sample_rate / 2 ({nyquist}) is needed")


@functools.lru_cache(maxsize=8)
def mel_filters(config: MelConfig) -> np.ndarray:
    """librosa's (Slaney) mel filter bank, (n_mels, n_fft // 2 + 1), float32."""
    from librosa.filters import mel

    return mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
               fmax=config.fmax).astype(np.float32)


class Mel(nn.Module):
    """Waveforms ``(B, 1, T)`` or ``(B, T)`` in [-1, 1] -> log-mel spectrograms ``(B, n_mels, T // hop)``."""

    def __init__(self, config: MelConfig = MelConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("basis", torch.from_numpy(mel_filters(config)), persistent=False)
        self.register_buffer("window", torch.hann_window(config.win), persistent=False)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.config
        y = audio.reshape(-1, audio.shape[-1]).float()
        pad = (c.n_fft - c.hop) // 2
        y = F.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(y, c.n_fft, hop_length=c.hop, win_length=c.win, window=self.window, center=False,
                          return_complex=True)
        return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.autocast(audio.device.type, enabled=False):
            return torch.log(torch.clamp(self.basis @ self.magnitude(audio), min=1e-5))


def griffin_lim(mel: torch.Tensor, config: MelConfig, length: int, n_iter: int = 32) -> torch.Tensor:
    """The classic non-neural inversion of a log-mel spectrogram ``(n_mels, frames)`` from
    :class:`Mel`: librosa's non-negative least-squares mel -> linear magnitude, then librosa's
    Griffin-Lim (``n_iter`` iterations, its default momentum 0.99: "fast Griffin-Lim"),
    realigned to the input's samples (librosa centres frame k at sample ``k * hop``,
    :class:`Mel` at ``k * hop + hop / 2``). Returns ``length`` samples."""
    import librosa

    magnitude = librosa.feature.inverse.mel_to_stft(
        np.exp(mel.double().cpu().numpy()), sr=config.sample_rate, n_fft=config.n_fft, power=1.0,
        fmin=config.fmin, fmax=config.fmax, norm="slaney", htk=False)
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=config.hop, win_length=config.win,
                           n_fft=config.n_fft, center=True, random_state=0)
    shift = config.n_fft // 2 - (config.n_fft - config.hop) // 2  # where Mel's frame 0 is centred
    out = np.zeros(length, dtype=np.float32)
    part = y[:max(0, length - shift)]
    out[shift:shift + len(part)] = part
    return torch.from_numpy(out)


RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))  # (n_fft, hop, win), Parallel WaveGAN's


def multi_resolution_stft(fake: torch.Tensor, real: torch.Tensor,
                          resolutions: tuple[tuple[int, int, int], ...] = RESOLUTIONS) -> torch.Tensor:
    """The multi-resolution STFT distance (Yamamoto et al., Parallel WaveGAN, 2020): the mean over
    resolutions of spectral convergence ``||S_r - S_f||_F / ||S_r||_F`` plus the mean absolute
    log-magnitude difference. ``fake``, ``real``: waveforms of the same length, ``(T,)``."""
    total = fake.new_zeros((), dtype=torch.float64)
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win, dtype=torch.float64)
        spec = [torch.stft(x.double(), n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-7)
                for x in (fake, real)]
        convergence = torch.linalg.norm(spec[1] - spec[0]) / torch.linalg.norm(spec[1])
        total = total + convergence + (spec[1].log() - spec[0].log()).abs().mean()
    return total / len(resolutions)
