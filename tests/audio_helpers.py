"""Small generated speech-like clips for the audio tests (no espeak-ng, no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 22050


def voiced(seconds: float, f0: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A buzzy vowel-like clip: harmonics of a gliding f0 under a syllable envelope, plus breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 1.5 * t + seed))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * t)) * np.minimum(1, 20 * t) * np.minimum(1, 20 * (t[-1] - t))
    return (0.3 * x * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def make_clips(folder: Path, n: int = 8, seconds: float = 0.5, rate: int = RATE, lists: bool = False) -> Path:
    """``n`` wav clips in ``folder/wavs`` (LJSpeech's layout) with metadata.csv; with ``lists``,
    HiFi-GAN's training.txt / validation.txt and an unseen.txt (the last two clips)."""
    import soundfile

    wavs = folder / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    names = [f"clip_{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        soundfile.write(str(wavs / f"{name}.wav"), voiced(seconds, 100 + 15 * i, i, rate), rate, subtype="PCM_16")
    (folder / "metadata.csv").write_text("".join(f"{n}|text {i}|text {i}\n" for i, n in enumerate(names)))
    if lists:
        (folder / "training.txt").write_text("".join(f"{n}|t\n" for n in names[:n - 4]))
        (folder / "validation.txt").write_text("".join(f"{n}|t\n" for n in names[n - 4:n - 2]))
        (folder / "unseen.txt").write_text("".join(f"{n}|t\n" for n in names[n - 2:]))
    return folder


#: a vocoder small enough for a CPU test: 2,048-sample segments, a 16-channel V3-shaped G, both
#: discriminator families (the paper's), thin
TINY = ["data.name=audio_folder", "data.batch_size=4", "data.args={segment: 2048, eval_limit: 2}",
        "objective.name=hifigan", "objective.args={discriminators: [MPD, MSD]}", "loss=lsgan", "metrics=[]",
        "networks={G: {name: hifigan_generator, args: {version: v3, channels: 16}}, "
        "MPD: {name: hifigan_mpd, args: {width: 0.01, periods: [2, 3]}}, "
        "MSD: {name: hifigan_msd, args: {width: 0.01, scales: 2}}}",
        "optim={type: adamw, betas: [0.8, 0.99], weight_decay: 0.01}",
        "log.progress=false", "log.sample_every=0", "log.every=2", "train.precision=no"]
