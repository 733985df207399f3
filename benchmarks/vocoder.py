"""A vocoder run against Griffin-Lim on every held-out utterance, its real-time factor, and examples.

    python benchmarks/vocoder.py RUN [--threads 1] [--examples 3] [--out benchmarks/vocoder_examples]

Loads the run's newest checkpoint and its data (``espeak_speech``: the corpus in
data/espeak_speech), vocodes every held-out utterance (unseen sentences of the training voices,
and the voice held out entirely) from its mel with the run's generator, and scores it with the
``vocoder`` metric beside Griffin-Lim from the same mels (32 iterations). Synthesis is timed on
``--threads`` CPU threads, one utterance at a time: the real-time factor is synthesis time over
audio time (below 1: faster than real time). Writes a table, a JSON file under
benchmarks/results/, and for ``--examples`` utterances a picture of the log-mel spectrograms
(input | Griffin-Lim | ganforge) with the three wavs.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ganforge.run.loading import load_for_sampling
from ganforge.plugins.audio.mel import Mel, griffin_lim
from ganforge.plugins.audio.metrics import VocoderMetrics
from ganforge.plugins.audio.plots import save_spectrograms
from ganforge.plugins.audio.vocoder import write_wav
from ganforge.observe.sampling import sampling_mode

KEYS = ("mel_l1", "mrstft", "pesq", "stoi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/vocoder_examples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets, system, recipe, meta = load_for_sampling(args.run, ema=True)
    held, config = system.held_out(), system.analysis  # every held-out utterance
    samples = torch.zeros_like(held.audio)
    synthesis = 0.0
    with torch.no_grad(), sampling_mode(system, nets):
        for i in range(len(held)):  # one utterance at a time, as a user vocodes, timed
            real = held.audio[i, 0, :int(held.lengths[i])]
            start = time.perf_counter()
            samples[i, 0, :len(real)] = system.vocode(nets, real)
            synthesis += time.perf_counter() - start
    audio_seconds = float(held.lengths.sum()) / config.sample_rate
    scores = VocoderMetrics()(samples, system.dataset, inputs=held)  # ganforge and Griffin-Lim (gl_)
    results = {group: {who: {k: scores[f"{group}/{prefix}{k}"] for k in KEYS if f"{group}/{prefix}{k}" in scores}
                       | {"utterances": int((held.groups == g).sum())}
                       for who, prefix in (("ganforge", ""), ("griffin_lim", "gl_"))}
               for g, group in enumerate(held.group_names)}
    rtf = synthesis / audio_seconds
    print(f"{recipe.name} at step {meta['step']}: {len(held)} held-out utterances, {audio_seconds / 60:.1f} min")
    print(f"{'group':10} {'vocoder':12} " + " ".join(f"{k:>8}" for k in KEYS))
    for group, by in results.items():
        for who, row in by.items():
            print(f"{group:10} {who:12} " + " ".join(f"{row.get(k, float('nan')):8.3f}" for k in KEYS))
    print(f"synthesis on {args.threads} CPU thread(s): {synthesis:.1f} s for {audio_seconds:.1f} s of audio, "
          f"real-time factor {rtf:.3f} ({1 / rtf:.1f}x faster than real time); {platform.processor() or platform.machine()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mel, pictures = Mel(config), []
    picks = sorted({0, 1, len(held) - 1} if args.examples == 3 else set(range(min(args.examples, len(held)))))
    for i in picks:
        n = int(held.lengths[i]) // config.hop * config.hop
        name, group = held.names[i], held.group_names[int(held.groups[i])]
        real, fake = held.audio[i, 0, :n], samples[i, 0, :n]
        with torch.no_grad():
            gl = griffin_lim(mel(real.reshape(1, 1, -1))[0], config, n)
        for suffix, audio in (("input", real), ("griffin_lim", gl), ("ganforge", fake)):
            write_wav(out / f"{name}-{suffix}.wav", audio, config.sample_rate)
        pictures.append((f"{name} ({group})", [("input", real), ("Griffin-Lim", gl), ("ganforge", fake)]))
    save_spectrograms(pictures, mel, out / f"{recipe.name}-spectrograms.png")
    record = {"run": args.run, "recipe": recipe.name, "step": meta["step"], "date": time.strftime("%Y-%m-%d"),
              "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "real_time_factor": rtf, "audio_seconds": audio_seconds, "results": results}
    target = Path("benchmarks/results") / f"vocoder-{recipe.name}-step{meta['step']}-{record['date']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1) + "\n")
    print(f"examples: {out}; results: {target}")


if __name__ == "__main__":
    main()
