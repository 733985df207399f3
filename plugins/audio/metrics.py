"""``vocoder``: how close vocoded speech is to the real recording, beside Griffin-Lim's.

On each held-out group of whole utterances (``held_out``: unseen sentences of the training
voices; ``unseen``: a voice never trained on), for the vocoder's waveforms and for Griffin-Lim's
from the same mels (the classic non-neural inversion, 32 iterations: the ``gl_`` keys):

- ``mel_l1``: the mean absolute difference of the loss mels (HiFi-GAN's validation number);
- ``mrstft``: the multi-resolution STFT distance (spectral convergence + log magnitude, 3 resolutions);
- ``pesq``: wide-band PESQ (ITU-T P.862.2) at 16 kHz (``pesq`` package; both signals resampled
  with soxr), 1.04 (bad) to 4.64;
- ``stoi``: short-time objective intelligibility (``pystoi``), 0 to 1.

Each is the mean over the group's utterances, each utterance cut to its whole mel frames.
Griffin-Lim's numbers depend only on the data, so they are computed once per process.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganforge import hookimpl
from ganforge.plugins.audio.mel import Mel, griffin_lim, multi_resolution_stft

__all__ = ["VocoderMetrics", "speech_scores"]

PESQ_RATE = 16000


def speech_scores(fake: torch.Tensor, real: torch.Tensor, rate: int, loss_mel: Mel, *, pesq: bool = True,
                  stoi: bool = True) -> dict[str, float]:
    """The scores of one utterance ``fake`` against ``real`` (waveforms (T,), the same length)."""
    with torch.no_grad():
        out = {"mel_l1": float((loss_mel(fake.reshape(1, 1, -1)) - loss_mel(real.reshape(1, 1, -1))).abs().mean()),
               "mrstft": float(multi_resolution_stft(fake, real))}
    f, r = fake.double().numpy(), real.double().numpy()
    if pesq:
        import soxr
        from pesq import PesqError, pesq as pesq_score

        try:
            out["pesq"] = float(pesq_score(PESQ_RATE, soxr.resample(r, rate, PESQ_RATE),
                                           soxr.resample(f, rate, PESQ_RATE), "wb"))
        except PesqError:  # (no utterance detected: silence)
            pass
    if stoi:
        from pystoi import stoi as stoi_score

        out["stoi"] = float(stoi_score(r, f, rate, extended=False))
    return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


class VocoderMetrics:
    def __init__(self, griffin: bool = True, pesq: bool = True, stoi: bool = True, n_iter: int = 32):
        self.griffin, self.pesq, self.stoi, self.n_iter = griffin, pesq, stoi, n_iter
        self._baseline: dict[tuple, list[dict[str, float]]] = {}

    def __call__(self, samples: torch.Tensor, dataset: Any, inputs: Any = None) -> dict[str, float]:
        if inputs is None or getattr(inputs, "mel", None) is None:
            raise ValueError("metric vocoder needs a vocoder run (objective hifigan): it compares whole "
                             "held-out utterances with their recordings")
        rate, hop = inputs.mel.sample_rate, inputs.mel.hop
        analysis, loss_mel = Mel(inputs.mel), Mel(inputs.loss_mel)
        key = (inputs.names, inputs.mel, inputs.loss_mel)
        ours, baseline = {}, {}
        for i in range(len(samples)):
            group = inputs.group_names[int(inputs.groups[i])]
            n = int(min(inputs.lengths[i], samples.shape[-1])) // hop * hop
            real, fake = inputs.audio[i, 0, :n].float().cpu(), samples[i, 0, :n].float().cpu()
            ours.setdefault(group, []).append(speech_scores(fake, real, rate, loss_mel, pesq=self.pesq, stoi=self.stoi))
            if self.griffin and key not in self._baseline:
                with torch.no_grad():
                    mel = analysis(real.reshape(1, 1, -1))[0]
                gl = griffin_lim(mel, inputs.mel, n, self.n_iter)
                baseline.setdefault(group, []).append(speech_scores(gl, real, rate, loss_mel, pesq=self.pesq,
                                                                    stoi=self.stoi))
        if self.griffin and key not in self._baseline:
            self._baseline[key] = baseline
        out = {}
        for group, rows in ours.items():
            out.update({f"{group}/{k}": v for k, v in _mean(rows).items()})
            if self.griffin:
                out.update({f"{group}/gl_{k}": v for k, v in _mean(self._baseline[key][group]).items()})
        return out


def vocoder(*, dataset: Any = None, griffin_lim: bool = True, pesq: bool = True, stoi: bool = True, n_iter: int = 32):
    """Vocoded held-out speech against the recordings: mel-L1, MR-STFT, wide-band PESQ, STOI; and
    the same for Griffin-Lim (n_iter iterations) from the same mels (gl_ keys)."""
    return VocoderMetrics(griffin_lim, pesq, stoi, n_iter)


@hookimpl
def ganforge_register_metrics(register):
    register("vocoder", vocoder)
