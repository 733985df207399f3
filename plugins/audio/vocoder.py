"""``hifigan``: a neural vocoder (mel spectrogram -> waveform) as a system.

Kong et al. 2020 (jik876/hifi-gan, train.py). Networks: ``G`` (``hifigan_generator``), ``MPD``
and ``MSD`` (``hifigan_mpd``, ``hifigan_msd``; the recipe's ``networks.<name>`` sets their
arguments). Optimizers ``G`` and ``D`` (both discriminators). Phases ``D`` then ``G`` on the
same batch of real segments ``y``:

- G's input is the mel of ``y`` (``fmax``, 8 kHz); ``G(mel)`` has ``y``'s length;
- D: the least-squares loss of every sub-discriminator on ``y`` and ``G(mel)``;
- G: ``mel_weight`` (45) x L1 between the loss mels (``fmax_loss``: none, the Nyquist
  frequency) of ``G(mel)`` and ``y``, plus ``feature_weight`` (2) x feature matching over every
  sub-discriminator's features, plus ``adversarial_weight`` x the adversarial terms.

``discriminators`` chooses the families (default both, as the paper; ``[MPD]`` is the CPU
demo's: the multi-scale one's grouped 41-tap convolutions cost most of an adversarial step
there, and the paper's ablation finds MPD the more important of the two).

The recipe's ``loss`` is the adversarial loss (HiFi-GAN: ``lsgan``). ganforge's ``lsgan`` halves
each term (Mao et al.'s 1/2), so the default ``adversarial_weight`` 2 gives HiFi-GAN's sum of
``(1 - D(G(s)))^2`` exactly. D's loss is halved likewise, which Adam does not see. A
discriminator warm-up (BigVGAN's ``freeze_step``, Vocos's ``pretrain_mel_steps``) is the
recipe's ``phases: {D: {start: N}}``: until then G learns from the mel loss alone.

Samples are whole held-out utterances (:class:`ganforge.plugins.audio.data.Utterances`, from
the dataset's ``evaluation()``); pictures are their spectrograms (real | ganforge), written
with the wavs beside them (:meth:`HiFiGAN.write_samples`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge import hookimpl
from ganforge.plugins.audio.mel import Mel, MelConfig
from ganforge.system import GANSystem, Network, Optimizer, Phase, Terms, d_adversarial, feature_matching, g_adversarial

__all__ = ["HiFiGAN", "write_wav"]

EXAMPLES = 4  # utterances in a training picture
DISCRIMINATORS = {"MPD": "hifigan_mpd", "MSD": "hifigan_msd"}  # network name -> its default part


def write_wav(path: Path, audio: torch.Tensor, sample_rate: int) -> None:
    """16-bit PCM mono wav (soundfile), clipped to [-1, 1]."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio.detach().float().clamp(-1, 1).reshape(-1).cpu().numpy(), sample_rate,
                    subtype="PCM_16")


class HiFiGAN(GANSystem):
    def __init__(self, loss: Any, dataset: Any, optim: Any, mel_weight: float = 45.0, feature_weight: float = 2.0,
                 adversarial_weight: float = 2.0, n_mels: int = 80, n_fft: int = 1024, win: int = 1024,
                 fmin: float = 0.0, fmax: float | None = 8000.0, fmax_loss: float | None = None,
                 discriminators: tuple[str, ...] = tuple(DISCRIMINATORS)):
        rate, hop = getattr(dataset, "sample_rate", None), getattr(dataset, "hop", None)
        if rate is None or hop is None or not callable(getattr(dataset, "evaluation", None)):
            raise ValueError(f"hifigan needs speech data (audio_folder, espeak_speech), got {type(dataset).__name__}")
        if min(mel_weight, feature_weight, adversarial_weight) < 0:
            raise ValueError("mel_weight, feature_weight and adversarial_weight are weights >= 0")
        discriminators = tuple(discriminators)
        if (not discriminators or len(set(discriminators)) < len(discriminators)
                or set(discriminators) - set(DISCRIMINATORS)):
            raise ValueError(f"hifigan: discriminators is a list of {' and '.join(DISCRIMINATORS)} (each at most "
                             f"once), got {list(discriminators)}")
        self.discriminators = discriminators
        self.dataset, self.loss = dataset, loss
        self.mel_weight, self.feature_weight, self.adversarial_weight = mel_weight, feature_weight, adversarial_weight
        self.analysis = MelConfig(rate, n_fft, hop, win, n_mels, fmin, fmax)
        self.loss_analysis = replace(self.analysis, fmax=fmax_loss)
        self.mel, self.loss_mel = Mel(self.analysis), Mel(self.loss_analysis)
        segment = tuple(dataset.sample_shape)
        betas, decay = tuple(optim.betas), optim.weight_decay
        self.networks = {"G": Network("generator", {"n_mels": n_mels, "hop": hop}, default="hifigan_generator"),
                         **{name: Network("discriminator", {"in_shape": segment}, default=DISCRIMINATORS[name])
                            for name in discriminators}}
        self.optimizers = {"G": Optimizer(["G"], optim.lr_g, betas, decay),
                           "D": Optimizer(list(discriminators), optim.lr_d, betas, decay)}
        # G's output is computed once a step, in D's phase with its graph, and trained through in
        # G's (Phase.keeps), as HiFi-GAN does; before D starts, G's phase computes it itself
        self.phases = [Phase("D", "D", self.d_loss, penalize=list(discriminators), keeps=["G"]),
                       Phase("G", "G", self.g_loss, new_batch=False)]
        self._held_out = None
        self.grid_nrow = 1

    # --- the analysis, on the batch's device
    def _mels(self, device: torch.device) -> tuple[nn.Module, nn.Module]:
        if self.mel.basis.device != device:
            self.mel, self.loss_mel = self.mel.to(device), self.loss_mel.to(device)
        return self.mel, self.loss_mel

    def check(self, nets):
        segment = self.dataset.sample_shape[-1]
        with torch.no_grad():
            out = nets["G"](torch.zeros(2, self.analysis.n_mels, segment // self.analysis.hop))
        if tuple(out.shape) != (2, 1, segment):
            raise ValueError(f"the generator makes {tuple(out.shape[1:])} from {segment // self.analysis.hop} mel "
                             f"frames; a segment is (1, {segment})")

    # --- losses
    def d_loss(self, y) -> Terms:
        mel, _ = self._mels(y.device)
        made = self.nets["G"](mel(y))  # with G's graph, kept for G's phase
        fake = made.detach()  # (D's loss trains D only)
        total, logs = 0.0, {}
        for name in self.discriminators:
            D = self.nets[name]
            part, part_logs = d_adversarial(self.loss, D(y), D(fake))
            total = total + part
            logs.update({f"{k}_{name.lower()}": v for k, v in part_logs.items()})
        return Terms(total, logs, judged={name: (y, fake) for name in self.discriminators}, keep={"fake": made})

    def g_loss(self, y) -> Terms:
        mel, loss_mel = self._mels(y.device)
        fake = self.kept["fake"] if self.kept is not None else self.nets["G"](mel(y))  # (D's phase made it)
        mel_l1 = (loss_mel(fake) - loss_mel(y)).abs().mean()
        loss, logs = self.mel_weight * mel_l1, {"g_mel_l1": mel_l1.detach()}
        if self.runs("D") and (self.adversarial_weight or self.feature_weight):
            for name in self.discriminators:
                D = self.nets[name]
                with torch.no_grad():  # real features are targets (D is frozen in G's phase)
                    real = D(y)
                out = D(fake)
                adv, adv_logs = g_adversarial(self.loss, out, lambda: real)
                fm = feature_matching(real, out)
                loss = loss + self.adversarial_weight * adv + self.feature_weight * fm
                logs.update({f"g_gan_{name.lower()}": adv.detach(), f"g_feat_{name.lower()}": fm.detach(),
                             **{f"{k}_{name.lower()}": v for k, v in adv_logs.items()}})
        return Terms(loss, logs)

    # --- samples: held-out utterances
    def held_out(self):
        if self._held_out is None:
            self._held_out = replace(self.dataset.evaluation(), mel=self.analysis, loss_mel=self.loss_analysis)
        return self._held_out

    def noise(self, n, device="cpu", generator=None):
        """The first ``n`` held-out utterances (the same every time: ``generator`` is unused)."""
        return self.held_out()[:n].to(device)

    def grid_noise(self, n, device="cpu", generator=None):
        return replace(self.noise(min(n, EXAMPLES), device), show=True)

    def generate(self, nets, utterances) -> torch.Tensor:
        """Waveforms (N, 1, T) of the utterances, vocoded from their mels (T: whole frames)."""
        return nets["G"](self._mels(utterances.audio.device)[0](utterances.audio))

    def vocode(self, nets, audio: torch.Tensor) -> torch.Tensor:
        """``ganforge vocode``: a waveform (T,) at the data's rate -> analysis -> mel -> G -> (T,)."""
        length = audio.shape[-1]
        padded = torch.nn.functional.pad(audio.reshape(1, 1, -1), (0, -length % self.analysis.hop))
        return nets["G"](self._mels(padded.device)[0](padded))[0, 0, :length]

    def vocode_files(self, nets, source: Path | None, out: Path) -> tuple[int, float, float]:
        """``ganforge vocode``: every wav/flac/ogg file under ``source`` (a file or a folder; None:
        the held-out utterances) -> analysis at the data's rate -> mel -> G -> ``out``, as
        16-bit wav under the same relative name. Returns (files, seconds of audio, seconds of
        synthesis on this process's threads)."""
        import time

        from ganforge.plugins.audio.data import EXTENSIONS, read_audio
        from ganforge.observe.sampling import sampling_mode

        rate = self.analysis.sample_rate
        if source is None:
            held = self.held_out()
            items = [(f"{n}.wav", held.audio[i, 0, :int(held.lengths[i])]) for i, n in enumerate(held.names)]
        else:
            files = [source] if source.is_file() else sorted(p for p in source.rglob("*")
                                                            if p.suffix.lower() in EXTENSIONS and p.is_file())
            if not files:
                raise ValueError(f"no audio files ({', '.join(EXTENSIONS)}) at {source}")
            items = [(str(p.relative_to(source).with_suffix(".wav")) if source.is_dir() else f"{p.stem}.wav",
                      read_audio(p, rate)[0]) for p in files]
        seconds = compute = 0.0
        with torch.no_grad(), sampling_mode(self, nets):
            for name, audio in items:
                start = time.perf_counter()
                result = self.vocode(nets, audio)
                compute += time.perf_counter() - start
                seconds += len(audio) / rate
                write_wav(out / name, result, rate)
        return len(items), seconds, compute

    def write_samples(self, samples: torch.Tensor, utterances, path: Path) -> Path:
        """The examples of training (``show``) or of ``ganforge sample``: a picture of the log-mel
        spectrograms, real | ganforge, one row per utterance, at ``path``; beside it a folder
        (``path`` without its suffix) with ``NAME.wav`` (ganforge) and ``NAME-real.wav``."""
        from ganforge.plugins.audio.plots import save_spectrograms

        folder = path.with_suffix("")
        rate = self.analysis.sample_rate
        rows = []
        for i in range(len(samples)):
            length = int(min(utterances.lengths[i], samples.shape[-1]))
            name = utterances.names[i] if utterances.names else f"{i:03d}"
            real, fake = utterances.audio[i, 0, :length].cpu(), samples[i, 0, :length].cpu()
            write_wav(folder / f"{name}.wav", fake, rate)
            write_wav(folder / f"{name}-real.wav", real, rate)
            rows.append((name, [("real", real), ("ganforge", fake)]))
        save_spectrograms(rows, Mel(self.analysis), path)
        return path


def hifigan(*, loss, optim, dataset, mel_weight: float = 45.0, feature_weight: float = 2.0,
            adversarial_weight: float = 2.0, n_mels: int = 80, n_fft: int = 1024, win: int = 1024, fmin: float = 0.0,
            fmax: float | None = 8000.0, fmax_loss: float | None = None, discriminators=tuple(DISCRIMINATORS)):
    """HiFi-GAN vocoder (Kong et al. 2020): mel -> waveform; G vs multi-period + multi-scale D
    (``discriminators``: both, or one), losses 45 x mel-L1 + 2 x feature matching + LSGAN; mel
    parameters as HiFi-GAN's (hop from the data)."""
    return HiFiGAN(loss, dataset, optim, mel_weight, feature_weight, adversarial_weight, n_mels, n_fft, win, fmin,
                   fmax, fmax_loss, tuple(discriminators))


@hookimpl
def ganforge_register_objectives(register):
    register("hifigan", hifigan)
